/* The streaming-store threshold: derived from the cache sizes once, overridable by environment and call. */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

#include "baseline_guard.h"
#include "sinkkit.h"

/* Per-CPU share of the last-level cache assumed when the C library reports no cache sizes. */
static const size_t fallback_cache_share = (size_t)4 << 20;

/* The threshold in effect; 0 until init_once has run, never 0 afterwards. */
static _Atomic size_t threshold;

/* The threshold derived from the cache sizes; written once inside init_once. */
static size_t default_threshold;
static pthread_once_t init_control = PTHREAD_ONCE_INIT;

/* Returns the level 3 cache size in bytes that the C library reports, else the level 2 size, or 0 when
   neither is known.
   NOTE: under some hypervisors glibc reports a larger level 3 cache than the processor has, which
   raises the default threshold accordingly. */
static size_t last_level_cache_bytes(void)
{
    long bytes = 0;
#if defined(_SC_LEVEL3_CACHE_SIZE)
    bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
#endif
#if defined(_SC_LEVEL2_CACHE_SIZE)
    if (bytes <= 0)
        bytes = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
    return bytes > 0 ? (size_t)bytes : 0;
}

/* 3/4 of one online CPU's share of the last-level cache, the fraction glibc's x86 memcpy uses for its
   non-temporal threshold (sysdeps/x86/dl-cacheinfo.h). Never 0. */
static size_t cache_threshold(void)
{
    size_t share = fallback_cache_share;
    const size_t cache = last_level_cache_bytes();
    const long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    if (cache > 0)
        share = cpus > 0 ? cache / (size_t)cpus : cache;

    const size_t bytes = share / 4 * 3;
    return bytes > 0 ? bytes : 1;
}

/* Parses a decimal number of bytes: digits only, no sign, no spaces, no overflow. */
static bool parse_bytes(const char *text, size_t *bytes)
{
    if (text == NULL || *text == '\0')
        return false;

    size_t value = 0;
    for (const char *c = text; *c != '\0'; c++) {
        if (*c < '0' || *c > '9')
            return false;
        const size_t digit = (size_t)(*c - '0');
        if (value > (SIZE_MAX - digit) / 10)
            return false;
        value = value * 10 + digit;
    }
    *bytes = value;
    return true;
}

static void init_once(void)
{
    default_threshold = cache_threshold();

    size_t initial = default_threshold;
    size_t from_env;
    if (parse_bytes(getenv("SINKKIT_STREAMING_THRESHOLD"), &from_env) && from_env != 0)
        initial = from_env;

    atomic_store_explicit(&threshold, initial, memory_order_release);
}

size_t sinkkit_streaming_threshold(void)
{
    size_t bytes = atomic_load_explicit(&threshold, memory_order_acquire);
    if (bytes != 0)
        return bytes;

    pthread_once(&init_control, init_once);
    return atomic_load_explicit(&threshold, memory_order_acquire);
}

sinkkit_status sinkkit_set_streaming_threshold(size_t bytes)
{
    /* Initialise first, so that the environment cannot replace this value later. */
    pthread_once(&init_control, init_once);

    atomic_store_explicit(&threshold, bytes != 0 ? bytes : default_threshold, memory_order_release);
    return SINKKIT_OK;
}
