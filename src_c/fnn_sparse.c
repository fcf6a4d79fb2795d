/* Instantiates the sparse-batch kernels of fnn_sparse_impl.h for float32 and float64, and the
   compression's scalar and AVX2 bodies (fnn_sparse.h). */
#include "fnn_sparse.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FNN_SPARSE_X86 1
#include <immintrin.h>
#else
#define FNN_SPARSE_X86 0
#endif

#define REAL float
#define SFX f32
#include "fnn_sparse_impl.h"
#undef REAL
#undef SFX

#define REAL double
#define SFX f64
#include "fnn_sparse_impl.h"
#undef REAL
#undef SFX

FNN_MULTIVERSION void fnn_widen_f32_f64(const float *restrict x, fnn_index size,
                                        double *restrict out)
{
    for (fnn_index i = 0; i < size; i++)
        out[i] = x[i];
}

/* ---- the compression ------------------------------------------------------------------------
 *
 * A row is taken 4 entries at a time by a KEEP4 step, which writes all 4 values (as DST) and
 * columns at the end of the CSR with the nonzero ones first and returns how many those are: the
 * next step overwrites the rest.  No branch decides what is kept, so none is mispredicted at the
 * edges of an image's strokes.  Nonzero is v != 0: NaN is kept, -0 dropped (its products add
 * nothing). */

#define FNN_KEEP4_SCALAR(NAME, SRC, DST)                                                        \
    static inline int NAME(const SRC *x, int32_t k, DST *val, int32_t *col)                     \
    {                                                                                           \
        int kept = 0;                                                                           \
        for (int l = 0; l < 4; l++) {                                                           \
            val[kept] = (DST)x[l];                                                              \
            col[kept] = k + l;                                                                  \
            kept += x[l] != 0;                                                                  \
        }                                                                                       \
        return kept;                                                                            \
    }
FNN_KEEP4_SCALAR(keep4_scalar_f32, float, float)
FNN_KEEP4_SCALAR(keep4_scalar_f64, double, double)
FNN_KEEP4_SCALAR(keep4_scalar_f32_f64, float, double)

#if FNN_SPARSE_X86
/* For the 4-bit mask of a group's nonzero lanes: the lanes to keep, in order, first (LANES),
   and the same as pairs of 32-bit lanes (PAIRS, for a vector of doubles). */
#define L(a, b, c, d) {a, b, c, d}
#define P(a, b, c, d) {2 * a, 2 * a + 1, 2 * b, 2 * b + 1, 2 * c, 2 * c + 1, 2 * d, 2 * d + 1}
#define FNN_KEEP(M) M(0, 0, 0, 0), M(0, 0, 0, 0), M(1, 0, 0, 0), M(0, 1, 0, 0),             \
        M(2, 0, 0, 0), M(0, 2, 0, 0), M(1, 2, 0, 0), M(0, 1, 2, 0), M(3, 0, 0, 0),          \
        M(0, 3, 0, 0), M(1, 3, 0, 0), M(0, 1, 3, 0), M(2, 3, 0, 0), M(0, 2, 3, 0),          \
        M(1, 2, 3, 0), M(0, 1, 2, 3)
static const int32_t LANES[16][4] __attribute__((aligned(16))) = {FNN_KEEP(L)};
static const int32_t PAIRS[16][8] __attribute__((aligned(32))) = {FNN_KEEP(P)};
#undef L
#undef P
#undef FNN_KEEP

#define FNN_AVX2 __attribute__((target("avx2,popcnt")))

/* the columns k + lane of the lanes kept by mask m, stored first; m returned */
FNN_AVX2 static inline int keep_columns(int m, int32_t k, int32_t *col)
{
    _mm_storeu_si128((__m128i *)col, _mm_add_epi32(_mm_load_si128((const __m128i *)LANES[m]),
                                                   _mm_set1_epi32(k)));
    return m;
}

/* the mask of a group's nonzero lanes (NaN counts: unordered-not-equal) */
FNN_AVX2 static inline int nonzero_ps(__m128 v)
{
    return _mm_movemask_ps(_mm_cmp_ps(v, _mm_setzero_ps(), _CMP_NEQ_UQ));
}

FNN_AVX2 static inline __m256d keep_doubles(__m256d v, int m)
{
    const __m256i pairs = _mm256_load_si256((const __m256i *)PAIRS[m]);
    return _mm256_castps_pd(_mm256_permutevar8x32_ps(_mm256_castpd_ps(v), pairs));
}

FNN_AVX2 static inline int keep4_avx2_f32(const float *x, int32_t k, float *val, int32_t *col)
{
    const __m128 v = _mm_loadu_ps(x);
    const int m = keep_columns(nonzero_ps(v), k, col);
    _mm_storeu_ps(val, _mm_permutevar_ps(v, _mm_load_si128((const __m128i *)LANES[m])));
    return _mm_popcnt_u32((unsigned)m);
}

FNN_AVX2 static inline int keep4_avx2_f64(const double *x, int32_t k, double *val, int32_t *col)
{
    const __m256d v = _mm256_loadu_pd(x);
    const int m = keep_columns(
        _mm256_movemask_pd(_mm256_cmp_pd(v, _mm256_setzero_pd(), _CMP_NEQ_UQ)), k, col);
    _mm256_storeu_pd(val, keep_doubles(v, m));
    return _mm_popcnt_u32((unsigned)m);
}

FNN_AVX2 static inline int keep4_avx2_f32_f64(const float *x, int32_t k, double *val,
                                              int32_t *col)
{
    const __m128 v = _mm_loadu_ps(x);
    const int m = keep_columns(nonzero_ps(v), k, col);
    _mm256_storeu_pd(val, keep_doubles(_mm256_cvtps_pd(v), m));  /* widening is exact */
    return _mm_popcnt_u32((unsigned)m);
}
#endif

/* the row loop around a KEEP4 step; a row writes at most K entries past nnz <= max_nnz (and
   a group's 4): within FNN_SPARSE_ROOM */
#define FNN_COMPRESS(NAME, SRC, DST, TARGET, KEEP4)                                            \
    TARGET static fnn_index NAME(const SRC *x, fnn_index n, fnn_index K, fnn_index ldx,        \
                                 fnn_index max_nnz, DST *val, int32_t *col, int32_t *ptr)      \
    {                                                                                          \
        fnn_index nnz = 0;                                                                     \
        ptr[0] = 0;                                                                            \
        for (fnn_index i = 0; i < n; i++) {                                                    \
            if (nnz > max_nnz)                                                                 \
                return -1;                                                                     \
            const SRC *row = x + i * ldx;                                                      \
            fnn_index k = 0;                                                                   \
            for (; k + 4 <= K; k += 4)                                                         \
                nnz += KEEP4(row + k, (int32_t)k, val + nnz, col + nnz);                       \
            for (; k < K; k++) {                                                               \
                val[nnz] = (DST)row[k];                                                        \
                col[nnz] = (int32_t)k;                                                         \
                nnz += row[k] != 0;                                                            \
            }                                                                                  \
            ptr[i + 1] = (int32_t)nnz;                                                         \
            if (i == 0 && nnz * n > 2 * max_nnz)  /* a dense batch: given up after one row */  \
                return -1;                                                                     \
        }                                                                                      \
        return nnz > max_nnz ? -1 : nnz;                                                       \
    }
FNN_COMPRESS(rows_scalar_f32, float, float, , keep4_scalar_f32)
FNN_COMPRESS(rows_scalar_f64, double, double, , keep4_scalar_f64)
FNN_COMPRESS(rows_scalar_f32_f64, float, double, , keep4_scalar_f32_f64)
#if FNN_SPARSE_X86
FNN_COMPRESS(rows_avx2_f32, float, float, FNN_AVX2, keep4_avx2_f32)
FNN_COMPRESS(rows_avx2_f64, double, double, FNN_AVX2, keep4_avx2_f64)
FNN_COMPRESS(rows_avx2_f32_f64, float, double, FNN_AVX2, keep4_avx2_f32_f64)
#endif

static int have_avx2(void)
{
#if FNN_SPARSE_X86
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("popcnt");
#else
    return 0;
#endif
}

static int chosen = -1;  /* fnn_body */

int fnn_sparse_kernel(void)
{
    return fnn_body(&chosen, have_avx2() ? FNN_SPARSE_AVX2 : FNN_SPARSE_SCALAR);
}

int fnn_sparse_set_kernel(int kernel)
{
    return fnn_set_body(&chosen, kernel, have_avx2() ? FNN_SPARSE_AVX2 : FNN_SPARSE_SCALAR);
}

#if FNN_SPARSE_X86
#define FNN_DISPATCH(SFX, SRC, DST)                                                            \
    fnn_index fnn_sparse_rows_##SFX(const SRC *x, fnn_index n, fnn_index K, fnn_index ldx,     \
                                    fnn_index max_nnz, DST *val, int32_t *col, int32_t *ptr)   \
    {                                                                                          \
        if (fnn_sparse_kernel() == FNN_SPARSE_AVX2)                                            \
            return rows_avx2_##SFX(x, n, K, ldx, max_nnz, val, col, ptr);                      \
        return rows_scalar_##SFX(x, n, K, ldx, max_nnz, val, col, ptr);                        \
    }
#else
#define FNN_DISPATCH(SFX, SRC, DST)                                                            \
    fnn_index fnn_sparse_rows_##SFX(const SRC *x, fnn_index n, fnn_index K, fnn_index ldx,     \
                                    fnn_index max_nnz, DST *val, int32_t *col, int32_t *ptr)   \
    {                                                                                          \
        return rows_scalar_##SFX(x, n, K, ldx, max_nnz, val, col, ptr);                        \
    }
#endif
FNN_DISPATCH(f32, float, float)
FNN_DISPATCH(f64, double, double)
FNN_DISPATCH(f32_f64, float, double)
