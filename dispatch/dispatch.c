/* The dispatch table: chosen once on first use, published atomically, overridable at run time. */
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "baseline_guard.h"
#include "cpu_features.h"
#include "dispatch.h"

/* The state is packed in one atomic word so that readers see a consistent selection without locks:
   bits 0-7 active ISA, bits 8-15 best ISA, 16-23 ISA named by SINKKIT_ISA, and flag bits above.
   Zero means "not initialised yet"; init_once sets it, and sinkkit_set_isa changes it later. */
enum {
    STATE_ENV_PRESENT = 1u << 24,
    STATE_ENV_RECOGNISED = 1u << 25,
    STATE_SET_BY_CALL = 1u << 26,
    STATE_READY = 1u << 27
};

static _Atomic uint32_t dispatch_state;

/* ISAs this CPU, OS and build can run; 0 until first probed. CPUID is slow under a hypervisor
   (a VM exit), so it is probed once. */
static _Atomic uint32_t runnable_cache;

static uint32_t runnable_mask(void)
{
    uint32_t mask = atomic_load_explicit(&runnable_cache, memory_order_acquire);
    if (mask == 0) {
        mask = sinkkit_runnable_isa_mask();
        atomic_store_explicit(&runnable_cache, mask, memory_order_release);
    }
    return mask;
}

static uint32_t state_pack(sinkkit_isa active, sinkkit_isa best, sinkkit_isa env_cap, uint32_t flags)
{
    return (uint32_t)active | ((uint32_t)best << 8) | ((uint32_t)env_cap << 16) | flags | STATE_READY;
}

static sinkkit_isa state_active(uint32_t state)
{
    return (sinkkit_isa)(state & 0xFFu);
}

/* The value of SINKKIT_ISA at the first call, truncated; written once inside init_once. */
static char env_value_at_init[sizeof(((sinkkit_dispatch_info *)0)->env_value)];
static pthread_once_t init_control = PTHREAD_ONCE_INIT;

/* Computes the initial selection from the CPU and SINKKIT_ISA, and publishes it. */
static void init_once(void)
{
    uint32_t runnable = runnable_mask();
    sinkkit_isa best = sinkkit_best_isa_in_mask(runnable, SINKKIT_ISA_AUTO);

    uint32_t flags = 0;
    sinkkit_isa cap = SINKKIT_ISA_AUTO;
    const char *env = getenv("SINKKIT_ISA");
    if (env != NULL) {
        flags |= STATE_ENV_PRESENT;
        strncpy(env_value_at_init, env, sizeof env_value_at_init - 1);
        if (sinkkit_isa_from_name(env, &cap))
            flags |= STATE_ENV_RECOGNISED;
        else
            cap = SINKKIT_ISA_AUTO;
    }

    sinkkit_isa active = sinkkit_best_isa_in_mask(runnable, cap);
    atomic_store_explicit(&dispatch_state, state_pack(active, best, cap, flags), memory_order_release);
}

static uint32_t current_state(void)
{
    uint32_t state = atomic_load_explicit(&dispatch_state, memory_order_acquire);
    if (state != 0)
        return state;

    pthread_once(&init_control, init_once);
    return atomic_load_explicit(&dispatch_state, memory_order_acquire);
}

const sinkkit_kernel_table *sinkkit_active_kernels(void)
{
    const sinkkit_kernel_table *table = sinkkit_kernel_table_for(state_active(current_state()));
    /* The active ISA is always one that is compiled in, so this never falls through in practice. */
    return table != NULL ? table : sinkkit_kernel_table_for(SINKKIT_ISA_SCALAR);
}

sinkkit_isa sinkkit_active_isa(void)
{
    return state_active(current_state());
}

bool sinkkit_isa_supported(sinkkit_isa isa)
{
    if (isa == SINKKIT_ISA_AUTO)
        return true;
    if ((unsigned)isa >= SINKKIT_ISA_COUNT)
        return false;
    return (runnable_mask() & (1u << isa)) != 0;
}

sinkkit_status sinkkit_set_isa(sinkkit_isa isa)
{
    if (!sinkkit_isa_supported(isa))
        return SINKKIT_ERROR_UNSUPPORTED_ISA;

    uint32_t old = current_state();
    for (;;) {
        sinkkit_isa best = (sinkkit_isa)((old >> 8) & 0xFFu);
        sinkkit_isa env_cap = (sinkkit_isa)((old >> 16) & 0xFFu);
        uint32_t env_flags = old & (STATE_ENV_PRESENT | STATE_ENV_RECOGNISED);

        uint32_t next;
        if (isa == SINKKIT_ISA_AUTO)
            next = state_pack(best, best, env_cap, env_flags);
        else
            next = state_pack(isa, best, env_cap, env_flags | STATE_SET_BY_CALL);

        if (atomic_compare_exchange_weak_explicit(&dispatch_state, &old, next, memory_order_acq_rel,
                                                  memory_order_acquire))
            return SINKKIT_OK;
    }
}

sinkkit_status sinkkit_get_dispatch_info(sinkkit_dispatch_info *info)
{
    if (info == NULL)
        return SINKKIT_ERROR_NULL_POINTER;

    uint32_t state = current_state();
    sinkkit_dispatch_info out = {0};
    out.active = state_active(state);
    out.best = (sinkkit_isa)((state >> 8) & 0xFFu);
    out.env_cap = (sinkkit_isa)((state >> 16) & 0xFFu);
    out.env_present = (state & STATE_ENV_PRESENT) != 0;
    out.env_recognised = (state & STATE_ENV_RECOGNISED) != 0;
    out.set_by_call = (state & STATE_SET_BY_CALL) != 0;

    /* Written before the state was published, and never again. */
    memcpy(out.env_value, env_value_at_init, sizeof out.env_value);

    *info = out;
    return SINKKIT_OK;
}

static const char *const isa_names[SINKKIT_ISA_COUNT] = {"auto", "scalar", "avx2", "avx512", "neon", "sve"};

const char *sinkkit_isa_name(sinkkit_isa isa)
{
    if ((unsigned)isa >= SINKKIT_ISA_COUNT)
        return "unknown";
    return isa_names[isa];
}

bool sinkkit_isa_from_name(const char *name, sinkkit_isa *isa)
{
    if (name == NULL || isa == NULL)
        return false;

    for (int i = 0; i < SINKKIT_ISA_COUNT; i++) {
        if (strcasecmp(name, isa_names[i]) == 0) {
            *isa = (sinkkit_isa)i;
            return true;
        }
    }
    return false;
}
