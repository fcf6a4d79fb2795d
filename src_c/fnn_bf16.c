/* bfloat16 rounding (see fnn_bf16.h): a scalar body and an AVX2 body, picked at run time. */
#include "fnn_bf16.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FNN_BF16_X86 1
#include <immintrin.h>
#else
#define FNN_BF16_X86 0
#endif

/* The rounded bits of one float32: round to nearest even on the 16 bits dropped; NaN
   quieted with its sign and upper payload kept. */
static inline uint32_t round_bits(uint32_t u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (u | 0x00400000u) & 0xffff0000u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) & 0xffff0000u;
}

static void round_scalar(const float *x, float *out, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        u = round_bits(u);
        memcpy(&out[i], &u, sizeof u);
    }
}

static void pack_scalar(const float *x, uint16_t *out, fnn_index size)
{
    for (fnn_index i = 0; i < size; i++) {
        uint32_t u;
        memcpy(&u, &x[i], sizeof u);
        out[i] = (uint16_t)(round_bits(u) >> 16);
    }
}

#if FNN_BF16_X86
/* Eight lanes of round_bits: the same integer arithmetic, with NaN lanes blended in. */
__attribute__((target("avx2"))) static inline __m256i round_bits8(__m256i u)
{
    const __m256i abs_mask = _mm256_set1_epi32(0x7fffffff);
    const __m256i inf = _mm256_set1_epi32(0x7f800000);
    const __m256i quiet = _mm256_set1_epi32(0x00400000);
    const __m256i high = _mm256_set1_epi32((int)0xffff0000u);
    const __m256i bias = _mm256_set1_epi32(0x7fff);
    const __m256i one = _mm256_set1_epi32(1);
    /* signed comparison is right here: |u| fits in 31 bits */
    const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs_mask), inf);
    const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), one);
    const __m256i rounded = _mm256_add_epi32(_mm256_add_epi32(u, bias), lsb);
    const __m256i r = _mm256_blendv_epi8(rounded, _mm256_or_si256(u, quiet), nan);
    return _mm256_and_si256(r, high);
}

__attribute__((target("avx2"))) static void round_avx2(const float *x, float *out,
                                                       fnn_index size)
{
    fnn_index i = 0;
    for (; i + 8 <= size; i += 8) {
        const __m256i u = _mm256_loadu_si256((const __m256i *)(x + i));
        _mm256_storeu_si256((__m256i *)(out + i), round_bits8(u));
    }
    round_scalar(x + i, out + i, size - i);
}

__attribute__((target("avx2"))) static void pack_avx2(const float *x, uint16_t *out,
                                                      fnn_index size)
{
    fnn_index i = 0;
    for (; i + 16 <= size; i += 16) {
        const __m256i a = _mm256_srli_epi32(round_bits8(_mm256_loadu_si256((const __m256i *)(x + i))), 16);
        const __m256i b = _mm256_srli_epi32(round_bits8(_mm256_loadu_si256((const __m256i *)(x + i + 8))), 16);
        /* packus works per 128-bit lane: a0 b0 a1 b1, put back in order by the permute */
        const __m256i packed = _mm256_permute4x64_epi64(_mm256_packus_epi32(a, b), 0xd8);
        _mm256_storeu_si256((__m256i *)(out + i), packed);
    }
    pack_scalar(x + i, out + i, size - i);
}
#endif

int fnn_bf16_have_avx2(void)
{
#if FNN_BF16_X86
    return __builtin_cpu_supports("avx2") ? 1 : 0;
#else
    return 0;
#endif
}

static int chosen = -1;  /* fnn_body */

int fnn_bf16_kernel(void)
{
    return fnn_body(&chosen, fnn_bf16_have_avx2() ? FNN_BF16_AVX2 : FNN_BF16_SCALAR);
}

int fnn_bf16_set_kernel(int kernel)
{
    return fnn_set_body(&chosen, kernel, fnn_bf16_have_avx2() ? FNN_BF16_AVX2 : FNN_BF16_SCALAR);
}

void fnn_round_bf16(const float *x, float *out, fnn_index size)
{
#if FNN_BF16_X86
    if (fnn_bf16_kernel() == FNN_BF16_AVX2) {
        round_avx2(x, out, size);
        return;
    }
#endif
    round_scalar(x, out, size);
}

void fnn_pack_bf16(const float *x, uint16_t *out, fnn_index size)
{
#if FNN_BF16_X86
    if (fnn_bf16_kernel() == FNN_BF16_AVX2) {
        pack_avx2(x, out, size);
        return;
    }
#endif
    pack_scalar(x, out, size);
}
