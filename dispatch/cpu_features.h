/* CPU feature words and the pure functions that turn them into the set of runnable ISAs. */
#ifndef SINKKIT_CPU_FEATURES_H
#define SINKKIT_CPU_FEATURES_H

#include <stdbool.h>
#include <stdint.h>

#include "sinkkit.h"

/* Raw x86 words as CPUID and XGETBV report them. xcr0 is meaningful only when xcr0_valid is true,
   which probing sets only after CPUID reported OSXSAVE (XGETBV faults otherwise). */
typedef struct sinkkit_x86_words {
    uint32_t max_leaf;     /* CPUID leaf 0, EAX */
    uint32_t leaf1_ecx;    /* CPUID leaf 1, ECX: FMA bit 12, OSXSAVE bit 27, AVX bit 28, F16C bit 29 */
    uint32_t leaf7_ebx;    /* CPUID leaf 7 subleaf 0, EBX: AVX2 bit 5, AVX512F 16, DQ 17, BW 30, VL 31 */
    uint64_t xcr0;         /* XCR0: SSE bit 1, AVX (YMM) bit 2, opmask 5, ZMM_Hi256 6, Hi16_ZMM 7 */
    bool xcr0_valid;
} sinkkit_x86_words;

/* Bit positions of the x86 feature flags used by the decision. */
#define SINKKIT_X86_LEAF1_FMA (UINT32_C(1) << 12)
#define SINKKIT_X86_LEAF1_OSXSAVE (UINT32_C(1) << 27)
#define SINKKIT_X86_LEAF1_AVX (UINT32_C(1) << 28)
#define SINKKIT_X86_LEAF1_F16C (UINT32_C(1) << 29)
#define SINKKIT_X86_LEAF7_AVX2 (UINT32_C(1) << 5)
#define SINKKIT_X86_LEAF7_AVX512F (UINT32_C(1) << 16)
#define SINKKIT_X86_LEAF7_AVX512DQ (UINT32_C(1) << 17)
#define SINKKIT_X86_LEAF7_AVX512BW (UINT32_C(1) << 30)
#define SINKKIT_X86_LEAF7_AVX512VL (UINT32_C(1) << 31)

/* XCR0 masks: the OS saves XMM and YMM state (0x6), and also opmask and both ZMM halves (0xE6). */
#define SINKKIT_XCR0_YMM_MASK 0x6u
#define SINKKIT_XCR0_ZMM_MASK 0xE6u

/* AArch64 HWCAP bits (Linux uapi asm/hwcap.h), defined here because older headers lack some. */
#define SINKKIT_HWCAP_ASIMD (1ull << 1)
#define SINKKIT_HWCAP_SVE (1ull << 22)

/* Bit (1u << isa) is set for every ISA the words allow. SCALAR is always set. */
uint32_t sinkkit_x86_isa_mask(const sinkkit_x86_words *words);
uint32_t sinkkit_aarch64_isa_mask(uint64_t hwcap, uint64_t hwcap2);

/* Bit (1u << isa) for every ISA compiled into this build. */
uint32_t sinkkit_compiled_isa_mask(void);

/* Rank used for capping: scalar 1, avx2 and neon 2, avx512 and sve 3, auto above all. */
int sinkkit_isa_rank(sinkkit_isa isa);

/* Returns the highest-ranked ISA in mask whose rank is at most that of cap (AUTO: no cap). */
sinkkit_isa sinkkit_best_isa_in_mask(uint32_t mask, sinkkit_isa cap);

/* Reads the real CPU: x86 CPUID/XGETBV or AArch64 getauxval. Returns false on other architectures. */
bool sinkkit_probe_x86(sinkkit_x86_words *words);
bool sinkkit_probe_aarch64(uint64_t *hwcap, uint64_t *hwcap2);

/* ISAs this CPU and OS can run and this build contains (probes once per call; cheap). */
uint32_t sinkkit_runnable_isa_mask(void);

#endif /* SINKKIT_CPU_FEATURES_H */
