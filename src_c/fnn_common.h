/*
 * What every C kernel of fastnn shares: the index type, build-per-CPU attributes, and exp
 * functions that vectorise.
 */
#ifndef FNN_COMMON_H
#define FNN_COMMON_H

#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <string.h>

typedef ptrdiff_t fnn_index;

/* Kernels are written once in *_impl.h bodies, included once per precision with SFX defined
   as f32 or f64: FNN(fnn_relu_forward) names fnn_relu_forward_f32 or fnn_relu_forward_f64. */
#define FNN_CAT2(a, b) a##_##b
#define FNN_CAT(a, b) FNN_CAT2(a, b)
#define FNN(name) FNN_CAT(name, SFX)

/* Loops that vectorise are also built for x86-64-v4 (AVX-512) and x86-64-v3 (AVX2 + FMA) where
   the compiler can, and the CPU picks the build at load time (through glibc's ifunc): the wheel
   itself assumes only baseline x86-64.  Helpers called from such a loop are always inlined, so that they are
   compiled for the same target.  (Not under AddressSanitizer, whose runtime does not support
   the ifunc that picks the build.) */
#if defined(__GNUC__) && __GNUC__ >= 11 && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
#define FNN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define FNN_MULTIVERSION
#endif
#if defined(__GNUC__)
#define FNN_INLINE static inline __attribute__((always_inline))
#else
#define FNN_INLINE static inline
#endif

/* Families with bodies picked at run time (fnn_bf16.c, fnn_sparse.c) number them from 0, the
   portable one, up to the best: *chosen is -1 until the first call takes the best the CPU
   has; a test may set any body up to it, and -1 (or one past it) restores the CPU's choice.
   Reads and writes of an int are atomic on every platform fastnn builds for; two threads
   choosing at once choose the same. */
FNN_INLINE int fnn_body(int *chosen, int best)
{
    if (*chosen < 0)
        *chosen = best;
    return *chosen;
}

FNN_INLINE int fnn_set_body(int *chosen, int body, int best)
{
    *chosen = body >= 0 && body <= best ? body : -1;
    return fnn_body(chosen, best);
}

/*
 * exp without a library call, so that a loop over it vectorises (libm's exp is one call per
 * element, about ten times slower than a vector of them here; the build's -fno-trapping-math
 * lets the compiler turn the selects below into vector blends).  x = n ln2 + r with |r| <=
 * ln2 / 2; exp(r) by its Taylor series to the term below half an ulp (13th order in double,
 * 7th in float); then 2^n as two factors so that subnormal results come out right.  NaN
 * propagates, large x gives inf and very negative x gives 0, as libm's exp.
 */
FNN_INLINE double fnn_exp_f64(double x)
{
    /* below -745.2 the result is 0 (set at the end): compute exp(0) meanwhile rather than a
       subnormal product, which costs a microcode assist */
    double xs = x < -745.2 ? 0.0 : x;
    xs = xs > 710.0 ? 710.0 : xs;
    xs = x == x ? xs : 0.0;
    /* round to nearest by adding and removing 1.5 * 2^52, a vectorisable rint */
    const double n = (xs * 1.4426950408889634 + 0x1.8p52) - 0x1.8p52;
    const double r = (xs - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
    double p = 1.0 / 6227020800.0; /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    const int32_t k = (int32_t)n, k1 = k / 2, k2 = k - k1; /* each in [-538, 538] */
    const uint64_t b1 = (uint64_t)(int64_t)(k1 + 1023) << 52;
    const uint64_t b2 = (uint64_t)(int64_t)(k2 + 1023) << 52;
    double s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    double y = p * s1 * s2;
    y = x < -745.2 ? 0.0 : y;
    return x == x ? y : x;
}

FNN_INLINE float fnn_exp_f32(float x)
{
    float xs = x < -103.98f ? 0.0f : x;
    xs = xs > 89.0f ? 89.0f : xs;
    xs = x == x ? xs : 0.0f;
    const float n = (xs * 1.44269504f + 0x1.8p23f) - 0x1.8p23f;
    const float r = (xs - n * 0.693145752f) - n * 1.42860677e-6f;
    float p = 1.0f / 5040.0f; /* 1/7! */
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const int32_t k = (int32_t)n, k1 = k / 2, k2 = k - k1; /* each in [-75, 75] */
    const uint32_t b1 = (uint32_t)(k1 + 127) << 23, b2 = (uint32_t)(k2 + 127) << 23;
    float s1, s2;
    memcpy(&s1, &b1, sizeof s1);
    memcpy(&s2, &b2, sizeof s2);
    float y = p * s1 * s2;
    y = x < -103.98f ? 0.0f : y;
    return x == x ? y : x;
}

/*
 * log without a library call, for the same reason.  x = 2^e m with m in [sqrt(1/2), sqrt(2)),
 * log m = 2 atanh(z) with z = (m - 1) / (m + 1), |z| <= 0.1716, by its series to the term below
 * half an ulp.  log(0) = -inf, log(x < 0) = NaN, log(inf) = inf, NaN propagates; subnormal x
 * is scaled into the normal range first.
 */
FNN_INLINE double fnn_log_f64(double x)
{
    const int tiny = x < 2.2250738585072014e-308;
    const double xn = tiny ? x * 0x1p54 : x; /* subnormals: exact scaling */
    uint64_t bits;
    memcpy(&bits, &xn, sizeof bits);
    /* exponent relative to sqrt(1/2): m in [sqrt(1/2), sqrt(2)) */
    const int64_t e = (int64_t)((bits + 0x00095f619980c433ull) >> 52) - 1023;
    const uint64_t mbits = bits - ((uint64_t)e << 52);
    double m;
    memcpy(&m, &mbits, sizeof m);
    const double z = (m - 1.0) / (m + 1.0), z2 = z * z;
    double p = 1.0 / 23.0;
    p = p * z2 + 1.0 / 21.0;
    p = p * z2 + 1.0 / 19.0;
    p = p * z2 + 1.0 / 17.0;
    p = p * z2 + 1.0 / 15.0;
    p = p * z2 + 1.0 / 13.0;
    p = p * z2 + 1.0 / 11.0;
    p = p * z2 + 1.0 / 9.0;
    p = p * z2 + 1.0 / 7.0;
    p = p * z2 + 1.0 / 5.0;
    p = p * z2 + 1.0 / 3.0;
    p = p * z2 + 1.0;
    const double ef = (double)(e - (tiny ? 54 : 0));
    double y = ef * 6.93147180369123816490e-01 + (2.0 * z * p + ef * 1.90821492927058770002e-10);
    y = x == 0 ? -(double)INFINITY : y;
    y = x < 0 ? (double)NAN : y;
    return (x == x && x != (double)INFINITY) ? y : x;
}

#endif
