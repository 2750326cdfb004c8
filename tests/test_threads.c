/* Sixteen threads released by one barrier make their first library call at the same moment. They must
 * all get the same ISA and bitwise identical results.
 *
 * The race only exists while the dispatcher is uninitialised, so this program makes no library call
 * before the threads are released. The first test repeats the race in forked children, each of which
 * starts uninitialised. The second runs it in this process. Build with -fsanitize=thread to check for
 * data races.
 */
#define _GNU_SOURCE
#include "test_support.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dispatch.h"

enum { THREADS = 16 };

/* Small enough for ThreadSanitizer and qemu, with lengths that leave tails on every vector width. */
enum { TOKENS = 8, HEADS = 4, HEAD_DIM = 133, ROW = HEADS * HEAD_DIM };
enum { ELEMENTS = TOKENS * ROW, VECTORS = TOKENS * HEADS };

/* Moments rows and channel counts one less than the row, so that no vector width divides them. */
enum { COLS = ROW - 1 };

static const sinkkit_head_layout layout = {TOKENS, HEADS, HEAD_DIM, ROW, HEAD_DIM};

/* Read-only input shared by every thread, filled before any thread starts. */
static float input[ELEMENTS];
static float gamma_weights[HEADS * HEAD_DIM];

/* Everything one thread computes. Each thread writes only its own result. */
typedef struct thread_result {
    sinkkit_status statuses[5];
    sinkkit_isa first_isa;
    sinkkit_isa last_isa;
    sinkkit_dispatch_info info;
    float y[ELEMENTS];
    float inv_rms[VECTORS];
    float mean[TOKENS];
    float variance[TOKENS];
    float max_abs[COLS];
    uint64_t argmax_token[COLS];
    double sum_squares[COLS];
    uint64_t stats_tokens;
} thread_result;

typedef struct race {
    pthread_barrier_t barrier;
    thread_result results[THREADS];
} race;

typedef struct thread_arg {
    race *race;
    int index;
} thread_arg;

static sinkkit_status run_rmsnorm(thread_result *r)
{
    return sinkkit_headwise_rmsnorm_f32(&layout, input, r->y, gamma_weights, SINKKIT_GAMMA_PER_HEAD, 1e-6f,
                                        r->inv_rms);
}

static sinkkit_status run_moments(thread_result *r)
{
    return sinkkit_row_moments_f32(input, TOKENS, COLS, ROW, r->mean, r->variance, SINKKIT_MOMENTS_UNBIASED);
}

/* Every thread runs the same calls, but the first call differs by thread so that each entry point
   that can initialise the dispatcher takes part in the race. */
static void *race_thread(void *p)
{
    thread_arg *arg = p;
    thread_result *r = &arg->race->results[arg->index];

    pthread_barrier_wait(&arg->race->barrier);

    switch (arg->index % 4) {
    case 0:
        r->statuses[0] = run_rmsnorm(r);
        break;
    case 1:
        r->statuses[1] = run_moments(r);
        break;
    case 2:
        r->first_isa = sinkkit_active_isa();
        break;
    default:
        r->statuses[4] = sinkkit_get_dispatch_info(&r->info);
        break;
    }

    if (arg->index % 4 != 2)
        r->first_isa = sinkkit_active_isa();
    if (arg->index % 4 != 0)
        r->statuses[0] = run_rmsnorm(r);
    if (arg->index % 4 != 1)
        r->statuses[1] = run_moments(r);

    sinkkit_channel_stats stats = {COLS, 0, r->max_abs, r->argmax_token, r->sum_squares};
    r->statuses[2] = sinkkit_channel_stats_reset(&stats);
    r->statuses[3] = sinkkit_channel_stats_update_f32(&stats, input, TOKENS, ROW, 0);
    r->stats_tokens = stats.tokens;

    r->last_isa = sinkkit_active_isa();
    if (arg->index % 4 != 3)
        r->statuses[4] = sinkkit_get_dispatch_info(&r->info);
    return NULL;
}

/* ---- checks after the threads have joined ---- */

static int check_same_as_thread_zero(const race *race)
{
    const thread_result *first = &race->results[0];
    int failures = 0;

    for (int t = 0; t < THREADS; t++) {
        const thread_result *r = &race->results[t];
        for (int s = 0; s < 5; s++) {
            if (r->statuses[s] != SINKKIT_OK) {
                fprintf(stderr, "thread %d: call %d returned %s\n", t, s, sinkkit_status_message(r->statuses[s]));
                failures++;
            }
        }
        if (r->first_isa != first->first_isa || r->last_isa != first->first_isa ||
            r->info.active != first->first_isa || r->info.best != first->info.best) {
            fprintf(stderr, "thread %d: ISA %s then %s (info %s), thread 0 got %s\n", t, sinkkit_isa_name(r->first_isa),
                    sinkkit_isa_name(r->last_isa), sinkkit_isa_name(r->info.active),
                    sinkkit_isa_name(first->first_isa));
            failures++;
        }
        /* Everything from y to the end of the struct is kernel output, compared bitwise. */
        size_t offset = offsetof(thread_result, y);
        if (memcmp((const char *)r + offset, (const char *)first + offset, sizeof *r - offset) != 0) {
            fprintf(stderr, "thread %d: kernel results differ bitwise from thread 0\n", t);
            failures++;
        }
    }
    return failures;
}

/* The shared result must be exactly what the active ISA's own table computes, and close to the reference. */
static int check_against_tables(const thread_result *r)
{
    int failures = 0;
    if (!sinkkit_isa_supported(r->first_isa)) {
        fprintf(stderr, "the threads got %s, which this machine cannot run\n", sinkkit_isa_name(r->first_isa));
        return 1;
    }
    if (getenv("SINKKIT_ISA") == NULL && r->first_isa != r->info.best) {
        fprintf(stderr, "the threads got %s, but the best ISA is %s\n", sinkkit_isa_name(r->first_isa),
                sinkkit_isa_name(r->info.best));
        failures++;
    }

    thread_result *direct = calloc(1, sizeof *direct);
    thread_result *reference = calloc(1, sizeof *reference);
    if (direct == NULL || reference == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }

    const sinkkit_kernel_table *table = sinkkit_kernel_table_for(r->first_isa);
    table->headwise_rmsnorm_f32(&layout, input, direct->y, gamma_weights, SINKKIT_GAMMA_PER_HEAD, 1e-6f,
                                direct->inv_rms);
    table->row_moments_f32(input, TOKENS, COLS, ROW, direct->mean, direct->variance, SINKKIT_MOMENTS_UNBIASED);
    if (memcmp(direct->y, r->y, sizeof r->y) != 0 || memcmp(direct->inv_rms, r->inv_rms, sizeof r->inv_rms) != 0 ||
        memcmp(direct->mean, r->mean, sizeof r->mean) != 0 ||
        memcmp(direct->variance, r->variance, sizeof r->variance) != 0) {
        fprintf(stderr, "the threads' results differ bitwise from the %s table\n", sinkkit_isa_name(r->first_isa));
        failures++;
    }

    sinkkit_headwise_rmsnorm_f32_reference(&layout, input, reference->y, gamma_weights, SINKKIT_GAMMA_PER_HEAD,
                                           1e-6f, reference->inv_rms);
    for (size_t i = 0; i < ELEMENTS; i++) {
        if (!tk_rmsnorm_close(r->y[i], reference->y[i])) {
            fprintf(stderr, "y[%zu] = %.9g, reference %.9g\n", i, r->y[i], reference->y[i]);
            failures++;
            break;
        }
    }

    free(reference);
    free(direct);
    return failures;
}

/* Releases THREADS threads at once into a library that nothing in this process has called yet.
   Returns the number of failed checks, with each failure printed. */
static int run_race(void)
{
    race *race = calloc(1, sizeof *race);
    if (race == NULL) {
        fprintf(stderr, "out of memory\n");
        abort();
    }
    pthread_barrier_init(&race->barrier, NULL, THREADS);

    pthread_t threads[THREADS];
    thread_arg args[THREADS];
    for (int t = 0; t < THREADS; t++) {
        args[t] = (thread_arg){race, t};
        if (pthread_create(&threads[t], NULL, race_thread, &args[t]) != 0) {
            fprintf(stderr, "pthread_create failed for thread %d\n", t);
            abort();
        }
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(threads[t], NULL);
    pthread_barrier_destroy(&race->barrier);

    int failures = check_same_as_thread_zero(race);
    if (failures == 0)
        failures = check_against_tables(&race->results[0]);
    if (failures == 0)
        printf("%d threads agreed on %s\n", THREADS, sinkkit_isa_name(race->results[0].first_isa));
    free(race);
    return failures;
}

/* ---- tests: the forked one must run first, while this process is still uninitialised ---- */

static void race_in_fresh_children(void **state)
{
    (void)state;
    const int trials = (int)tk_size(8, 2);

    for (int trial = 0; trial < trials; trial++) {
        fflush(stdout);
        fflush(stderr);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            int failures = run_race();
            fflush(stdout);
            _exit(failures == 0 ? 0 : 1);
        }

        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            fail_msg("trial %d: the child process failed (wait status 0x%x)", trial, status);
    }
}

static void race_in_this_process(void **state)
{
    (void)state;
    assert_int_equal(run_race(), 0);
}

int main(void)
{
    uint64_t seed = 0x7EAD5EEDULL;
    tk_fill_random(input, ELEMENTS, &seed, 0.5f, 4.0f);
    tk_fill_random(gamma_weights, HEADS * HEAD_DIM, &seed, 1.0f, 0.25f);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(race_in_fresh_children),
        cmocka_unit_test(race_in_this_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
