/*
 * The first dense layer on a sparse batch (fastnn/_kernels/_sparse.pyx): its forward GEMM
 * x W and its weight gradient x^T d over the nonzeros of x only.  Images are mostly
 * background: an MNIST batch is 19% nonzero, and these GEMMs then do a fifth of a dense
 * GEMM's work (the Design block of _sparse.pyx says when they run, and why they give the
 * dense GEMM's values).
 *
 * The batch is compressed by rows (CSR): the nonzeros of row i are val[ptr[i] .. ptr[i+1]),
 * in column order, their columns in col; for the weight gradient also by columns (CSC):
 * the nonzeros of column k are cval[cptr[k] .. cptr[k+1]), in row order, their rows in crow.
 * Indices are int32 (a batch's nonzeros are far fewer than 2^31: the caller bounds them).
 * No allocation, no error paths.
 */
#ifndef FNN_SPARSE_H
#define FNN_SPARSE_H

#include "fnn_common.h"

/* the entries the compression may write: a row's worth past max_nnz, and a vector more */
#define FNN_SPARSE_ROOM(max_nnz, K) ((max_nnz) + (K) + 8)

/* The compression has a scalar body and an AVX2 one (a vector compare and a table of lane
   permutations, in half the scalar body's time), picked at run time; the GEMMs are built per
   CPU (FNN_MULTIVERSION). */
enum fnn_sparse_kernel { FNN_SPARSE_SCALAR = 0, FNN_SPARSE_AVX2 = 1 };
/* the body in use (the first call picks the CPU's best) */
int fnn_sparse_kernel(void);
/* use a body (for the tests); one the CPU lacks, or -1, restores the CPU's choice */
int fnn_sparse_set_kernel(int kernel);

#define FNN_DECLARE_SPARSE(REAL, SFX)                                                          \
    /* The CSR of x (n, K), rows ldx apart, into val, col and ptr (n + 1).  Returns its count  \
       of nonzeros, or -1 as soon as that passes max_nnz, or the first row's passes twice    \
       its share of max_nnz (the CSR is then unfinished);                                    \
       val and col need room for FNN_SPARSE_ROOM(max_nnz, K) entries. */                      \
    fnn_index fnn_sparse_rows_##SFX(const REAL *x, fnn_index n, fnn_index K, fnn_index ldx,   \
                                    fnn_index max_nnz, REAL *val, int32_t *col, int32_t *ptr); \
    /* The CSC of the same matrix from its CSR: cptr (K + 1), cval and crow (nnz each). */    \
    void fnn_sparse_columns_##SFX(fnn_index n, fnn_index K, const REAL *val,                 \
                                  const int32_t *col, const int32_t *ptr, REAL *cval,        \
                                  int32_t *crow, int32_t *cptr);                              \
    /* out[i, j] = sum_k x[i, k] W[k, j] over the nonzeros of row i (in column order), for    \
       n rows of CSR x; W (K, N) with rows ldw apart, out rows ldo apart. */                  \
    void fnn_sparse_gemm_##SFX(fnn_index n, fnn_index N, const REAL *val, const int32_t *col, \
                               const int32_t *ptr, const REAL *W, fnn_index ldw, REAL *out,  \
                               fnn_index ldo);                                                \
    /* dW[k, j] = sum_i x[i, k] d[i, j] over the nonzeros of column k (in row order), for K  \
       columns of CSC x; d (n, N) with rows ldd apart, dW rows ldw apart (a column without   \
       nonzeros gives a zero row). */                                                         \
    void fnn_sparse_gemm_tn_##SFX(fnn_index K, fnn_index N, const REAL *cval,                \
                                  const int32_t *crow, const int32_t *cptr, const REAL *d,   \
                                  fnn_index ldd, REAL *dW, fnn_index ldw);                    \
    /* whether every one of a's size values is finite */                                      \
    int fnn_all_finite_##SFX(const REAL *a, fnn_index size);

FNN_DECLARE_SPARSE(float, f32)
FNN_DECLARE_SPARSE(double, f64)
#undef FNN_DECLARE_SPARSE

/* fnn_sparse_rows_f64 of a float32 x, its values widened to double (exactly): a float64
   network given float32 images needs no float64 copy of them */
fnn_index fnn_sparse_rows_f32_f64(const float *x, fnn_index n, fnn_index K, fnn_index ldx,
                                  fnn_index max_nnz, double *val, int32_t *col, int32_t *ptr);
/* out[i] = x[i], i < size: the float64 copy after all, where a dense GEMM runs */
void fnn_widen_f32_f64(const float *x, fnn_index size, double *out);

#endif
