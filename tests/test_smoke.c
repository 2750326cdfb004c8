/* Smoke test: the library links and the dispatcher picks a runnable ISA. */
#include "test_support.h"

static void active_isa_is_runnable(void **state)
{
    (void)state;
    assert_true(sinkkit_isa_supported(sinkkit_active_isa()));
}

static void placeholder_per_isa(void **state)
{
    const sinkkit_kernel_table *k = tk_kernels_or_skip(TK_STATE_ISA(state));
    assert_int_equal(k->isa, TK_STATE_ISA(state));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(active_isa_is_runnable),
        TK_ISA_TESTS(placeholder_per_isa),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
