# The one place where fastnn touches BLAS (_blas.pyx): row-major GEMMs for the kernels.
from cython cimport floating
from libc.stdint cimport uint16_t

cdef void sgemm(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const float *a,
                int lda, const float *b, int ldb, float beta, float *c, int ldc) noexcept nogil
cdef void dgemm(bint trans_a, bint trans_b, int m, int n, int k, double alpha, const double *a,
                int lda, const double *b, int ldb, double beta, double *c, int ldc) noexcept nogil


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C, op(X) = X.T when trans_x.

    lda, ldb, ldc are the row strides (in elements) of A, B and C as stored.
    """
    if floating is float:
        sgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    else:
        dgemm(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)


# MKL's bfloat16 GEMM (cblas_gemm_bf16bf16f32): row-major C[m, n] = alpha * op(A) @ op(B) +
# beta * C with A and B bfloat16 (the upper 16 bits of a float32, as uint16_t), products
# accumulated and C stored in float32.  Only where have_gemm_bf16(), which is true on the MKL
# backend: elsewhere gemm_bf16 writes nothing.
cdef bint have_gemm_bf16() noexcept nogil
cdef void gemm_bf16(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                    const uint16_t *a, int lda, const uint16_t *b, int ldb, float beta,
                    float *c, int ldc) noexcept nogil
