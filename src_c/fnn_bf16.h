/*
 * bfloat16 rounding of float32 GEMM operands (fastnn/_kernels/_bf16.pyx).
 *
 * bfloat16 is float32's upper half: the same sign and 8-bit exponent, 7 mantissa bits.  Both
 * kernels round to nearest, ties to even, on the bits (an integer add of 0x7fff plus the
 * lowest kept bit, then truncation), which is IEEE rounding for every finite input, the
 * subnormals included (bfloat16 has float32's exponent range, so a subnormal rounds like any
 * other bit pattern), and overflows to inf where IEEE rounding does (above 0x7f7f7fff in
 * magnitude); inf stays inf; NaN stays NaN: quieted (bit 22 set), its sign and upper payload
 * kept, as the x86 VCVTNEPS2BF16 instruction does.
 *
 *   fnn_round_bf16: the rounded values in float32 storage (low 16 bits zero): the portable
 *                   path's operands, for a float32 GEMM (a product of two bfloat16 values is
 *                   exact in float32).
 *   fnn_pack_bf16:  the same values as bfloat16 bit patterns (uint16), the operands of a
 *                   native bfloat16 GEMM (MKL's cblas_gemm_bf16bf16f32).
 *
 * Each has a scalar body and an AVX2 body, chosen at run time by fnn_bf16_kernel() (the
 * CPU's AVX2 flag, through __builtin_cpu_supports, unless fnn_bf16_set_kernel forced one).
 * fnn_round_bf16 may work in place (out == x); otherwise out and x must not overlap.
 */
#ifndef FNN_BF16_H
#define FNN_BF16_H

#include "fnn_common.h"

enum fnn_bf16_kernel { FNN_BF16_SCALAR = 0, FNN_BF16_AVX2 = 1 };

void fnn_round_bf16(const float *x, float *out, fnn_index size);
void fnn_pack_bf16(const float *x, uint16_t *out, fnn_index size);

/* The kernel the two functions above run: FNN_BF16_AVX2 where the CPU has AVX2 (and the
   compiler could build it), else FNN_BF16_SCALAR. */
int fnn_bf16_kernel(void);
/* Force a kernel (FNN_BF16_SCALAR always works; FNN_BF16_AVX2 only where available; one
   the CPU lacks, or -1, restores the CPU's choice); returns the kernel now in use. */
int fnn_bf16_set_kernel(int kernel);
/* Whether this build and CPU can run the AVX2 kernel. */
int fnn_bf16_have_avx2(void);

#endif
