/* Test helpers: guarded buffers, random data, error measures and per-ISA skipping. */
#define _GNU_SOURCE
#include "test_support.h"

#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

const sinkkit_isa tk_isas[5] = {SINKKIT_ISA_SCALAR, SINKKIT_ISA_AVX2, SINKKIT_ISA_AVX512, SINKKIT_ISA_NEON,
                                SINKKIT_ISA_SVE};

void *tk_guarded_alloc(size_t bytes, size_t align, void **mapping, size_t *mapping_bytes)
{
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t slack = align > 64 ? align : 64;
    const size_t data_pages = (bytes + slack + page - 1) / page;
    const size_t total = (data_pages + 1) * page;

    char *base = mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        fprintf(stderr, "mmap of %zu bytes failed\n", total);
        abort();
    }
    char *guard = base + data_pages * page;
    if (mprotect(guard, page, PROT_NONE) != 0) {
        fprintf(stderr, "mprotect of the guard page failed\n");
        abort();
    }

    *mapping = base;
    *mapping_bytes = total;
    return guard - bytes;
}

void tk_guarded_free(void *mapping, size_t mapping_bytes)
{
    munmap(mapping, mapping_bytes);
}

tk_buffer tk_buffer_new(size_t count, size_t offset_floats)
{
    tk_buffer buffer = {0};
    buffer.count = count;
    const size_t bytes = count * sizeof(float);

    if (offset_floats == TK_AT_GUARD) {
        buffer.data = tk_guarded_alloc(bytes, 64, &buffer.mapping, &buffer.mapping_bytes);
        return buffer;
    }

    /* Reserve 64 bytes more than needed, then start offset_floats past the 64-byte boundary at or
       after the page-aligned mapping start. */
    char *end = tk_guarded_alloc(bytes + 128, 64, &buffer.mapping, &buffer.mapping_bytes);
    (void)end;
    char *start = (char *)buffer.mapping + (offset_floats % 16) * sizeof(float);
    buffer.data = (float *)start;
    return buffer;
}

void tk_buffer_free(tk_buffer *buffer)
{
    if (buffer->mapping != NULL)
        tk_guarded_free(buffer->mapping, buffer->mapping_bytes);
    *buffer = (tk_buffer){0};
}

uint64_t tk_random_u64(uint64_t *state)
{
    /* xorshift64*: fast, deterministic, good enough for test data. */
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1DULL;
}

float tk_random_float(uint64_t *state, float lo, float hi)
{
    double u = (double)(tk_random_u64(state) >> 11) * 0x1p-53;
    return (float)(lo + (hi - lo) * u);
}

void tk_fill_random(float *x, size_t n, uint64_t *state, float m, float s)
{
    for (size_t i = 0; i < n; i++)
        x[i] = m + s * tk_random_float(state, -1.0f, 1.0f);
}

bool tk_rmsnorm_close(float got, double want)
{
    if (fabs(want) < FLT_MIN && !isnan(want))
        return fabs((double)got - want) <= 2.0 * 0x1p-149;
    return metric_relative_error(got, want) <= 1e-6;
}

const sinkkit_kernel_table *tk_kernels_or_skip(sinkkit_isa isa)
{
    const sinkkit_kernel_table *table = sinkkit_kernel_table_for(isa);
    if (table == NULL) {
        printf("SKIP: %s kernels are not compiled into this build\n", sinkkit_isa_name(isa));
        skip();
    }
    if (!sinkkit_isa_supported(isa)) {
        printf("SKIP: this CPU or OS cannot run %s\n", sinkkit_isa_name(isa));
        skip();
    }
    return table;
}

void tk_fill_sentinel(void *p, size_t bytes)
{
    memset(p, 0xA5, bytes);
}

bool tk_sentinel_intact(const void *p, size_t bytes)
{
    const unsigned char *c = p;
    for (size_t i = 0; i < bytes; i++) {
        if (c[i] != 0xA5)
            return false;
    }
    return true;
}

size_t tk_size(size_t full, size_t quick)
{
    const char *env = getenv("SINKKIT_TEST_QUICK");
    return (env != NULL && env[0] != '\0' && env[0] != '0') ? quick : full;
}
