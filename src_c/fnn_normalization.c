/* Dropout masks, and the kernels of fnn_normalization_impl.h for float32 and float64. */
#include <math.h>

#include "fnn_normalization.h"

void fnn_dropout_mask(uint8_t *restrict mask, fnn_index size, double ratio,
                      double (*next_double)(void *), void *state)
{
    for (fnn_index i = 0; i < size; i++)
        mask[i] = next_double(state) > ratio;
}

/* NumPy's MT19937 (numpy/random/src/mt19937/mt19937.c), word for word: the regeneration of
   the 624 words and the tempering of each.  Written as loops without a carried dependence
   shorter than a vector (the first reads words not yet rewritten, the second words rewritten
   227 places earlier), so that they vectorise, where NumPy's next_double is one call per two
   words. */
#define MT_N 624
#define MT_M 397
#define MT_MATRIX_A 0x9908b0dfu
#define MT_UPPER 0x80000000u
#define MT_LOWER 0x7fffffffu

FNN_INLINE uint32_t mt_twist(uint32_t a, uint32_t b, uint32_t far)
{
    const uint32_t y = (a & MT_UPPER) | (b & MT_LOWER);
    return far ^ (y >> 1) ^ ((0u - (y & 1u)) & MT_MATRIX_A);
}

FNN_INLINE void mt_regenerate(uint32_t *key)
{
    int i;
    for (i = 0; i < MT_N - MT_M; i++)
        key[i] = mt_twist(key[i], key[i + 1], key[i + MT_M]);
    for (; i < MT_N - 1; i++)
        key[i] = mt_twist(key[i], key[i + 1], key[i + MT_M - MT_N]);
    key[MT_N - 1] = mt_twist(key[MT_N - 1], key[0], key[MT_M - 1]);
}

FNN_INLINE uint32_t mt_temper(uint32_t y)
{
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

/* NumPy's mt19937_next_double: 53 random bits from two words, (a 2^26 + b) / 2^53. */
FNN_INLINE double mt_double(uint32_t w0, uint32_t w1)
{
    const int32_t a = (int32_t)(mt_temper(w0) >> 5), b = (int32_t)(mt_temper(w1) >> 6);
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

FNN_MULTIVERSION void fnn_dropout_mask_mt19937(uint8_t *restrict mask, fnn_index size,
                                               double ratio, fnn_mt19937_state *restrict state)
{
    uint32_t *key = state->key;
    int pos = state->pos;
    fnn_index i = 0;
    while (i < size) {
        if (pos == MT_N) {
            mt_regenerate(key);
            pos = 0;
        }
        if (pos == MT_N - 1) {
            /* a double whose two words straddle a regeneration */
            const uint32_t w0 = key[pos];
            mt_regenerate(key);
            mask[i++] = mt_double(w0, key[0]) > ratio;
            pos = 1;
            continue;
        }
        fnn_index m = (MT_N - pos) / 2; /* whole doubles left in this block of words */
        if (m > size - i)
            m = size - i;
        const uint32_t *w = key + pos;
        uint8_t *out = mask + i;
        for (fnn_index j = 0; j < m; j++)
            out[j] = mt_double(w[2 * j], w[2 * j + 1]) > ratio;
        i += m;
        pos += (int)(2 * m);
    }
    state->pos = pos;
}

#define REAL float
#define SFX f32
#define EXP fnn_exp_f32
#define SQRT sqrt
#include "fnn_normalization_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef SQRT

#define REAL double
#define SFX f64
#define EXP fnn_exp_f64
#define SQRT sqrt
#include "fnn_normalization_impl.h"
#undef REAL
#undef SFX
#undef EXP
#undef SQRT
