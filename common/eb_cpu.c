/* eb_cpu.c: the CPU's vector features (eb_cpu.h). */
#include "common/eb_cpu.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(EB_NO_CLONES)
#define EB_CPU_X86 1
#else
#define EB_CPU_X86 0
#endif

/* -1 until the first call; the answer is the same in every thread, so a
 * race on the first call only repeats the question */
static int features = -1;

unsigned eb_cpu_features(void)
{
    int f = __atomic_load_n(&features, __ATOMIC_RELAXED);
    if (f < 0) {
        f = 0;
#if EB_CPU_X86
        __builtin_cpu_init();
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma"))
            f |= EB_CPU_AVX512;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            f |= EB_CPU_AVX2_FMA;
        if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("f16c"))
            f |= EB_CPU_AVX2_F16C;
#endif
        __atomic_store_n(&features, f, __ATOMIC_RELAXED);
    }
    return (unsigned)f;
}
