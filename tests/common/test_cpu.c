/* test_cpu.c: eb_cpu_features against the compiler's own CPU checks, and
 * stable from call to call. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>

#include "common/eb_cpu.h"

static void test_features(void **state)
{
    const unsigned f = eb_cpu_features();
    (void)state;
    printf("features: avx512 %d, avx2+fma %d, avx2+f16c %d\n", eb_cpu_has(EB_CPU_AVX512),
           eb_cpu_has(EB_CPU_AVX2_FMA), eb_cpu_has(EB_CPU_AVX2_F16C));
    assert_int_equal(eb_cpu_features(), f);
    assert_true(eb_cpu_has(0));
    assert_int_equal(f & ~7u, 0);
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
    __builtin_cpu_init();
    assert_int_equal(eb_cpu_has(EB_CPU_AVX512),
                     __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"));
    assert_int_equal(eb_cpu_has(EB_CPU_AVX2_FMA),
                     __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"));
    assert_int_equal(eb_cpu_has(EB_CPU_AVX2_F16C),
                     __builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"));
    assert_int_equal(eb_cpu_has(EB_CPU_AVX512 | EB_CPU_AVX2_FMA),
                     eb_cpu_has(EB_CPU_AVX512) && eb_cpu_has(EB_CPU_AVX2_FMA));
#else
    assert_int_equal(f, 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_features),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
