/* Streaming stores in head-wise RMSNorm: the same bits as ordinary stores, and the threshold that chooses them.
 *
 * Without options the program runs every test. ctest also runs it once per value of
 * SINKKIT_STREAMING_THRESHOLD (see tests/CMakeLists.txt) with one of these options, which check the
 * threshold that the first library call returns:
 *   --expect-threshold BYTES  the threshold must start at BYTES
 *   --expect-default          the threshold must start at the default derived from the cache sizes
 */
#define _GNU_SOURCE
#include "test_support.h"

#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- problems ---- */

static const sinkkit_gamma_kind gamma_kinds[3] = {SINKKIT_GAMMA_NONE, SINKKIT_GAMMA_SHARED,
                                                  SINKKIT_GAMMA_PER_HEAD};

/* Head sizes around every vector width and the sizes the kernels treat as constants, and long ones. */
static const size_t head_dims[] = {1, 3, 7, 8, 15, 16, 17, 31, 33, 63, 64, 65, 100, 127, 128, 129, 255, 256, 257, 1000};
#define HEAD_DIM_COUNT (sizeof head_dims / sizeof head_dims[0])

/* Returns layout kind 0..3: token-major, head-major, padded token-major, and the query heads of a
   fused QKV buffer (a token row three times the heads' span). */
static sinkkit_head_layout make_layout(int kind, size_t tokens, size_t heads, size_t dim)
{
    switch (kind) {
    case 0:
        return (sinkkit_head_layout){tokens, heads, dim, heads * dim, dim};
    case 1:
        return (sinkkit_head_layout){tokens, heads, dim, dim, tokens * dim};
    case 2:
        return (sinkkit_head_layout){tokens, heads, dim, heads * (dim + 3) + 5, dim + 3};
    default:
        return (sinkkit_head_layout){tokens, heads, dim, 3 * heads * dim, dim};
    }
}

static size_t vector_offset(const sinkkit_head_layout *l, size_t t, size_t h)
{
    return t * l->token_stride + h * l->head_stride;
}

/* Elements from the first element of the layout to one past its last. */
static size_t layout_span(const sinkkit_head_layout *l)
{
    return vector_offset(l, l->tokens - 1, l->heads - 1) + l->head_dim;
}

static size_t gamma_count(sinkkit_gamma_kind kind, const sinkkit_head_layout *l)
{
    if (kind == SINKKIT_GAMMA_SHARED)
        return l->head_dim;
    if (kind == SINKKIT_GAMMA_PER_HEAD)
        return l->heads * l->head_dim;
    return 0;
}

/* Fills x with magnitudes spread over 2^-20 .. 2^20, then makes vector 1 all zero, vector 2 huge (its
   squares overflow float) and puts a NaN into vector 3, where the layout has them, so that the
   shared rescue runs between ordinary vectors. */
static void fill_input(float *x, const sinkkit_head_layout *l, uint64_t *seed)
{
    const size_t span = layout_span(l);
    for (size_t i = 0; i < span; i++) {
        float v = ldexpf(tk_random_float(seed, 1.0f, 2.0f), (int)(tk_random_u64(seed) % 41) - 20);
        x[i] = (tk_random_u64(seed) & 1) ? -v : v;
    }

    const size_t vectors = l->tokens * l->heads;
    for (size_t v = 1; v < vectors && v <= 3; v++) {
        float *xv = x + vector_offset(l, v / l->heads, v % l->heads);
        for (size_t d = 0; d < l->head_dim; d++) {
            if (v == 1)
                xv[d] = 0.0f;
            else if (v == 2)
                xv[d] = (d & 1) ? -1e20f : 1e20f;
        }
        if (v == 3)
            xv[l->head_dim / 2] = NAN;
    }
}

/* ---- comparisons ---- */

static void expect_same_bits(const float *got, const float *want, size_t count, const char *label)
{
    for (size_t i = 0; i < count; i++) {
        if (memcmp(&got[i], &want[i], sizeof(float)) != 0)
            fail_msg("%s differs at index %zu: got %.9g, expected %.9g", label, i, (double)got[i], (double)want[i]);
    }
}

/* Checks that y equals want, bit for bit, in every element of the layout's vectors. */
static void expect_same_vectors(const sinkkit_head_layout *l, const float *y, const float *want, const char *label)
{
    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++) {
            const size_t offset = vector_offset(l, t, h);
            expect_same_bits(y + offset, want + offset, l->head_dim, label);
        }
    }
}

/* Checks every element of y against the double-precision reference. */
static void expect_matches_reference(const sinkkit_head_layout *l, const float *x, const float *y, const float *gamma,
                                     sinkkit_gamma_kind kind)
{
    float *want = calloc(layout_span(l), sizeof(float));
    assert_non_null(want);
    sinkkit_headwise_rmsnorm_f32_reference(l, x, want, gamma, kind, 1e-6f, NULL);

    for (size_t t = 0; t < l->tokens; t++) {
        for (size_t h = 0; h < l->heads; h++) {
            const size_t offset = vector_offset(l, t, h);
            for (size_t d = 0; d < l->head_dim; d++) {
                if (!tk_rmsnorm_close(y[offset + d], want[offset + d]))
                    fail_msg("token %zu, head %zu, element %zu: got %.9g, expected %.9g", t, h, d,
                             (double)y[offset + d], (double)want[offset + d]);
            }
        }
    }
    free(want);
}

/* Returns the table's streaming variant, or skips the test visibly when the ISA has none. */
static sinkkit_rmsnorm_f32_fn streaming_or_skip(const sinkkit_kernel_table *k)
{
    if (k->headwise_rmsnorm_f32_streaming == NULL) {
        printf("SKIP: %s has no streaming variant\n", sinkkit_isa_name(k->isa));
        skip();
    }
    return k->headwise_rmsnorm_f32_streaming;
}

/* ---- the streaming variant against the ordinary one ---- */

/* Runs both variants on one problem, with y offset_floats past a 64-byte boundary, out of place and in
   place, and checks that y and inv_rms agree bit for bit and that y matches the reference. */
static void compare_variants(const sinkkit_kernel_table *k, sinkkit_rmsnorm_f32_fn streaming, sinkkit_head_layout l,
                             sinkkit_gamma_kind kind, size_t offset_floats, uint64_t *seed)
{
    const size_t span = layout_span(&l);
    const size_t vectors = l.tokens * l.heads;
    tk_buffer x = tk_buffer_new(span, (offset_floats * 5 + 3) % 16);
    tk_buffer gamma = tk_buffer_new(gamma_count(kind, &l), 0);
    tk_buffer y_ordinary = tk_buffer_new(span, offset_floats);
    tk_buffer y_streaming = tk_buffer_new(span, offset_floats);
    tk_buffer in_place = tk_buffer_new(span, offset_floats);
    float *r_ordinary = malloc(vectors * sizeof(float));
    float *r_streaming = malloc(vectors * sizeof(float));
    assert_non_null(r_ordinary);
    assert_non_null(r_streaming);

    fill_input(x.data, &l, seed);
    tk_fill_random(gamma.data, gamma.count, seed, 0.0f, 2.0f);
    const float *g = kind == SINKKIT_GAMMA_NONE ? NULL : gamma.data;

    k->headwise_rmsnorm_f32(&l, x.data, y_ordinary.data, g, kind, 1e-6f, r_ordinary);
    streaming(&l, x.data, y_streaming.data, g, kind, 1e-6f, r_streaming);
    expect_same_vectors(&l, y_streaming.data, y_ordinary.data, "streaming y");
    expect_same_bits(r_streaming, r_ordinary, vectors, "streaming inv_rms");
    expect_matches_reference(&l, x.data, y_streaming.data, g, kind);

    /* Without inv_rms, whole-line vectors with shared or no gamma take a variant of their own. */
    memset(y_streaming.data, 0, span * sizeof(float));
    streaming(&l, x.data, y_streaming.data, g, kind, 1e-6f, NULL);
    expect_same_vectors(&l, y_streaming.data, y_ordinary.data, "streaming y without inv_rms");

    memcpy(in_place.data, x.data, span * sizeof(float));
    streaming(&l, in_place.data, in_place.data, g, kind, 1e-6f, NULL);
    expect_same_vectors(&l, in_place.data, y_ordinary.data, "streaming y in place");

    tk_buffer_free(&x);
    tk_buffer_free(&gamma);
    tk_buffer_free(&y_ordinary);
    tk_buffer_free(&y_streaming);
    tk_buffer_free(&in_place);
    free(r_ordinary);
    free(r_streaming);
}

/* Every head size, layout and gamma kind, with y at each of the 16 float offsets from a 64-byte
   boundary, so that the aligned middle, the ordinary head and tail and their absence all occur. */
static void streaming_matches_ordinary(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    sinkkit_rmsnorm_f32_fn streaming = streaming_or_skip(k);
    uint64_t seed = 0x5EED5EED;

    for (size_t i = 0; i < HEAD_DIM_COUNT; i++) {
        for (int layout_kind = 0; layout_kind < 4; layout_kind++) {
            for (size_t g = 0; g < 3; g++) {
                const sinkkit_head_layout l = make_layout(layout_kind, 3, 5, head_dims[i]);
                for (size_t offset = 0; offset < 16; offset += head_dims[i] >= 256 ? 5 : 1)
                    compare_variants(k, streaming, l, gamma_kinds[g], offset, &seed);
            }
        }
    }
}

/* Enough vectors that the pipeline's main loop and its prefetching run, not only its first and last
   groups. */
static void streaming_matches_ordinary_long_run(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    sinkkit_rmsnorm_f32_fn streaming = streaming_or_skip(k);
    const size_t dims[] = {17, 64, 128, 300};
    uint64_t seed = 404;

    for (size_t i = 0; i < sizeof dims / sizeof dims[0]; i++) {
        for (size_t g = 0; g < 3; g++) {
            compare_variants(k, streaming, make_layout(0, tk_size(97, 33), 8, dims[i]), gamma_kinds[g], 0, &seed);
            compare_variants(k, streaming, make_layout(1, 9, 7, dims[i]), gamma_kinds[g], 9, &seed);
        }
    }
}

/* x and y each end right before a PROT_NONE page, so a store or load past the end faults. */
static void streaming_at_guard_page(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    sinkkit_rmsnorm_f32_fn streaming = streaming_or_skip(k);
    uint64_t seed = 77;

    for (size_t i = 0; i < HEAD_DIM_COUNT; i++) {
        for (int layout_kind = 0; layout_kind < 2; layout_kind++) {
            const sinkkit_head_layout l = make_layout(layout_kind, 2, 3, head_dims[i]);
            const size_t span = layout_span(&l);
            tk_buffer x = tk_buffer_new(span, TK_AT_GUARD);
            tk_buffer y = tk_buffer_new(span, TK_AT_GUARD);
            tk_buffer want = tk_buffer_new(span, 0);
            tk_buffer gamma = tk_buffer_new(l.head_dim, TK_AT_GUARD);
            fill_input(x.data, &l, &seed);
            tk_fill_random(gamma.data, gamma.count, &seed, 0.0f, 2.0f);

            k->headwise_rmsnorm_f32(&l, x.data, want.data, gamma.data, SINKKIT_GAMMA_SHARED, 1e-6f, NULL);
            streaming(&l, x.data, y.data, gamma.data, SINKKIT_GAMMA_SHARED, 1e-6f, NULL);
            expect_same_vectors(&l, y.data, want.data, "streaming y at a guard page");

            streaming(&l, x.data, x.data, gamma.data, SINKKIT_GAMMA_SHARED, 1e-6f, NULL);
            expect_same_vectors(&l, x.data, want.data, "streaming y in place at a guard page");

            tk_buffer_free(&x);
            tk_buffer_free(&y);
            tk_buffer_free(&want);
            tk_buffer_free(&gamma);
        }
    }
}

/* ---- the public entry point on either side of the threshold ---- */

/* With the threshold below the output span and with streaming disabled, the public call gives the same
   bits on every ISA, including those without a streaming variant. */
static void public_call_same_bits_either_side(void **state)
{
    const sinkkit_isa isa = TK_STATE_ISA(state);
    tk_kernels_or_skip(isa);
    assert_int_equal(sinkkit_set_isa(isa), SINKKIT_OK);
    uint64_t seed = 31;

    for (size_t i = 0; i < HEAD_DIM_COUNT; i++) {
        for (size_t g = 0; g < 3; g++) {
            const sinkkit_head_layout l = make_layout(0, 4, 6, head_dims[i]);
            const size_t span = layout_span(&l);
            tk_buffer x = tk_buffer_new(span, 0);
            tk_buffer gamma = tk_buffer_new(gamma_count(gamma_kinds[g], &l), 0);
            tk_buffer y_below = tk_buffer_new(span, i % 16);
            tk_buffer y_disabled = tk_buffer_new(span, i % 16);
            float r_below[24];
            float r_disabled[24];
            fill_input(x.data, &l, &seed);
            tk_fill_random(gamma.data, gamma.count, &seed, 0.0f, 2.0f);

            assert_int_equal(sinkkit_set_streaming_threshold(span * sizeof(float) - 1), SINKKIT_OK);
            assert_int_equal(sinkkit_headwise_rmsnorm_f32(&l, x.data, y_below.data, gamma.data, gamma_kinds[g], 1e-6f,
                                                          r_below),
                             SINKKIT_OK);
            assert_int_equal(sinkkit_set_streaming_threshold(SIZE_MAX), SINKKIT_OK);
            assert_int_equal(sinkkit_headwise_rmsnorm_f32(&l, x.data, y_disabled.data, gamma.data, gamma_kinds[g],
                                                          1e-6f, r_disabled),
                             SINKKIT_OK);

            expect_same_vectors(&l, y_below.data, y_disabled.data, "public y");
            expect_same_bits(r_below, r_disabled, 24, "public inv_rms");
            tk_buffer_free(&x);
            tk_buffer_free(&gamma);
            tk_buffer_free(&y_below);
            tk_buffer_free(&y_disabled);
        }
    }

    assert_int_equal(sinkkit_set_streaming_threshold(0), SINKKIT_OK);
    assert_int_equal(sinkkit_set_isa(SINKKIT_ISA_AUTO), SINKKIT_OK);
}

/* ---- the threshold ---- */

/* The default as sinkkit.h documents it, computed here from sysconf: 3/4 of the level 3 cache size (else
   level 2) divided by the online CPUs, or 3/4 of 4 MiB when no cache size is known. */
static size_t documented_default(void)
{
    long cache = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (cache <= 0)
        cache = sysconf(_SC_LEVEL2_CACHE_SIZE);
    double share = 4.0 * 1024 * 1024;
    if (cache > 0) {
        const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
        share = (double)cache / (double)(cpus > 0 ? cpus : 1);
    }
    return (size_t)(share * 0.75);
}

/* Within 4 bytes of the documented default, which leaves the library its choice of integer rounding. */
static void expect_documented_default(size_t got)
{
    const size_t want = documented_default();
    const size_t distance = got > want ? got - want : want - got;
    if (distance > 4)
        fail_msg("default streaming threshold is %zu bytes, expected about %zu", got, want);
}

/* Set values read back; 0 restores the default; SIZE_MAX stays as the "disabled" value. */
static void threshold_set_and_read_back(void **state)
{
    (void)state;
    const size_t values[] = {1, 4096, 12345, (size_t)3 << 30, SIZE_MAX};

    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        assert_int_equal(sinkkit_set_streaming_threshold(values[i]), SINKKIT_OK);
        assert_true(sinkkit_streaming_threshold() == values[i]);
    }

    assert_int_equal(sinkkit_set_streaming_threshold(0), SINKKIT_OK);
    expect_documented_default(sinkkit_streaming_threshold());
}

/* The default follows sysconf, and is never 0. */
static void threshold_default_follows_cache_sizes(void **state)
{
    (void)state;
    assert_int_equal(sinkkit_set_streaming_threshold(0), SINKKIT_OK);
    const size_t got = sinkkit_streaming_threshold();
    assert_true(got > 0);
    expect_documented_default(got);
}

enum { RACE_THREADS = 4, RACE_ROUNDS = 2000 };

typedef struct race_arg {
    size_t own_value;
    bool saw_foreign_value;
} race_arg;

/* Sets its own value and reads the threshold back, many times. Every value read must be one that some
   thread set. */
static void *race_thread(void *p)
{
    race_arg *arg = p;
    for (int i = 0; i < RACE_ROUNDS; i++) {
        sinkkit_set_streaming_threshold(arg->own_value);
        const size_t seen = sinkkit_streaming_threshold();
        if (seen < 1000 || seen >= 1000 + RACE_THREADS)
            arg->saw_foreign_value = true;
    }
    return NULL;
}

/* Concurrent setting and reading is safe (run under ThreadSanitizer to check the memory order too). */
static void threshold_set_from_threads(void **state)
{
    (void)state;
    pthread_t threads[RACE_THREADS];
    race_arg args[RACE_THREADS];

    for (size_t t = 0; t < RACE_THREADS; t++) {
        args[t] = (race_arg){1000 + t, false};
        assert_int_equal(pthread_create(&threads[t], NULL, race_thread, &args[t]), 0);
    }
    for (size_t t = 0; t < RACE_THREADS; t++) {
        pthread_join(threads[t], NULL);
        assert_false(args[t].saw_foreign_value);
    }

    assert_int_equal(sinkkit_set_streaming_threshold(0), SINKKIT_OK);
}

/* ---- SINKKIT_STREAMING_THRESHOLD ---- */

static size_t expected_first_threshold;
static bool expect_default_first;

/* The first library call returns the value that the environment asked for. */
static void environment_sets_first_threshold(void **state)
{
    (void)state;
    const size_t first = sinkkit_streaming_threshold();

    if (expect_default_first)
        expect_documented_default(first);
    else if (first != expected_first_threshold)
        fail_msg("SINKKIT_STREAMING_THRESHOLD=%s gave %zu bytes, expected %zu",
                 getenv("SINKKIT_STREAMING_THRESHOLD"), first, expected_first_threshold);

    /* A set value replaces it, and 0 restores the default rather than the environment's value. */
    assert_int_equal(sinkkit_set_streaming_threshold(777), SINKKIT_OK);
    assert_true(sinkkit_streaming_threshold() == 777);
    assert_int_equal(sinkkit_set_streaming_threshold(0), SINKKIT_OK);
    expect_documented_default(sinkkit_streaming_threshold());
}

static int run_environment_check(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(environment_sets_first_threshold),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--expect-threshold") == 0) {
        expected_first_threshold = strtoull(argv[2], NULL, 10);
        return run_environment_check();
    }
    if (argc == 2 && strcmp(argv[1], "--expect-default") == 0) {
        expect_default_first = true;
        return run_environment_check();
    }
    if (argc != 1) {
        fprintf(stderr, "usage: %s [--expect-threshold BYTES | --expect-default]\n", argv[0]);
        return 2;
    }

    const struct CMUnitTest tests[] = {
        TK_ISA_TESTS(streaming_matches_ordinary),
        TK_ISA_TESTS(streaming_matches_ordinary_long_run),
        TK_ISA_TESTS(streaming_at_guard_page),
        TK_ISA_TESTS(public_call_same_bits_either_side),
        cmocka_unit_test(threshold_set_and_read_back),
        cmocka_unit_test(threshold_default_follows_cache_sizes),
        cmocka_unit_test(threshold_set_from_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
