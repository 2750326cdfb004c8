/* Helpers shared by the test programs: guarded buffers, random data, error measures, ISA loops. */
#ifndef SINKKIT_TEST_SUPPORT_H
#define SINKKIT_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>
#include <stdbool.h>

#include "error_metrics.h"
#include "kernels.h"
#include "sinkkit.h"

/* A float buffer in its own mapping with a PROT_NONE page after it. */
typedef struct tk_buffer {
    float *data;
    size_t count;
    void *mapping;
    size_t mapping_bytes;
} tk_buffer;

/* Offset value that makes tk_buffer_new end the data exactly at the guard page. */
#define TK_AT_GUARD ((size_t)-1)

/* Maps count floats (count may be 0). With offset_floats 0 to 15 the data starts that many floats past
   a 64-byte boundary (the guard page then follows after a gap); with TK_AT_GUARD the last element sits
   right before the guard page, so any read or write past the end faults. Aborts on mmap failure. */
tk_buffer tk_buffer_new(size_t count, size_t offset_floats);
void tk_buffer_free(tk_buffer *buffer);

/* Same for other element types: the returned pointer ends exactly at a guard page. */
void *tk_guarded_alloc(size_t bytes, size_t align, void **mapping, size_t *mapping_bytes);
void tk_guarded_free(void *mapping, size_t mapping_bytes);

/* Deterministic xorshift generator so that failures reproduce. */
uint64_t tk_random_u64(uint64_t *state);
/* Uniform in [lo, hi). */
float tk_random_float(uint64_t *state, float lo, float hi);
/* Fills x with values m + s * u, u uniform in [-1, 1). */
void tk_fill_random(float *x, size_t n, uint64_t *state, float m, float s);

/* True when got is within the RMSNorm bound of want: relative error <= 1e-6, or, when want is below
   FLT_MIN in magnitude, |got - want| <= 2 * 2^-149. */
bool tk_rmsnorm_close(float got, double want);

/* Relative error bound of a sum of non-negative terms formed as float partials of at most 8 roundings
   flushed into double (the numeric scheme in kernels.h): gamma_8 = 8u / (1 - 8u), plus the double part. */
#define TK_FLOAT_PARTIAL_BOUND (8.0 * 0x1p-24 / (1.0 - 8.0 * 0x1p-24) + 1e-12)

/* The ISAs a test runs on, in order: scalar, avx2, avx512, neon, sve. Use with cmocka prestate:
   cmocka_unit_test_prestate(test_fn, &tk_isas[i]). */
extern const sinkkit_isa tk_isas[5];

/* Returns the kernel table of isa, or calls cmocka's skip() with a printed reason when the build or
   this CPU lacks it. Never returns NULL. */
const sinkkit_kernel_table *tk_kernels_or_skip(sinkkit_isa isa);

/* Fills n bytes at p with a recognisable sentinel (0xA5) and checks that it is still there. */
void tk_fill_sentinel(void *p, size_t bytes);
bool tk_sentinel_intact(const void *p, size_t bytes);

/* Five cmocka test entries for fn, one per ISA, named "fn [isa]"; fn reads its ISA from *state. */
#define TK_ISA_TEST(fn, i, name) {#fn " [" name "]", fn, NULL, NULL, (void *)&tk_isas[i]}
#define TK_ISA_TESTS(fn)                                                                            \
    TK_ISA_TEST(fn, 0, "scalar"), TK_ISA_TEST(fn, 1, "avx2"), TK_ISA_TEST(fn, 2, "avx512"),        \
        TK_ISA_TEST(fn, 3, "neon"), TK_ISA_TEST(fn, 4, "sve")

/* The ISA a TK_ISA_TESTS entry runs on. */
#define TK_STATE_ISA(state) (*(const sinkkit_isa *)*(state))

/* Scales test sizes down when SINKKIT_TEST_QUICK is set (emulated runs). Returns full or quick. */
size_t tk_size(size_t full, size_t quick);

#endif /* SINKKIT_TEST_SUPPORT_H */
