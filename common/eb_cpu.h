/* eb_cpu.h: which vector paths this CPU runs, asked once. The kernels
 * that pick a path at run time (methods/nn/direct.c, philox.c, quant.c)
 * ask here rather than each caching its own __builtin_cpu_supports. */
#ifndef EB_CPU_H
#define EB_CPU_H

enum {
    EB_CPU_AVX512 = 1,   /* AVX-512F and FMA */
    EB_CPU_AVX2_FMA = 2, /* AVX2 and FMA */
    EB_CPU_AVX2_F16C = 4 /* AVX2 and F16C */
};

/* The EB_CPU_* bits this CPU has (x86-64 with GCC; 0 elsewhere, and
 * under EB_NO_CLONES, so the portable paths run). Computed at the first
 * call, then a relaxed load. */
unsigned eb_cpu_features(void);

static inline int eb_cpu_has(unsigned feature)
{
    return (eb_cpu_features() & feature) == feature;
}

#endif /* EB_CPU_H */
