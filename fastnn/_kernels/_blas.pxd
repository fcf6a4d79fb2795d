# The one place where fastnn touches BLAS: scipy.linalg.cython_blas, seen row-major.
#
# BLAS is column-major.  A row-major m x n array is, to BLAS, its own n x m transpose, so the
# row-major product C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T:
# the same transpose flags, the operands swapped, m and n swapped.
from cython cimport floating
from scipy.linalg.cython_blas cimport dgemm, sgemm


cdef inline void gemm(bint trans_a, bint trans_b, int m, int n, int k,
                      floating alpha, const floating *a, int lda,
                      const floating *b, int ldb,
                      floating beta, floating *c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C, op(X) = X.T when trans_x.

    lda, ldb, ldc are the row strides (in elements) of A, B and C as stored.
    """
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    # BLAS demands leading dimensions >= 1 even for empty operands
    if lda < 1:
        lda = 1
    if ldb < 1:
        ldb = 1
    if ldc < 1:
        ldc = 1
    if floating is float:
        sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
              &beta, c, &ldc)
    else:
        dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda,
              &beta, c, &ldc)
