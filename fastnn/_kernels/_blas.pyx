# Design: the one place where fastnn touches BLAS.
#
# The kernels' GEMMs go to the OpenBLAS that NumPy itself loaded, through its CBLAS interface
# (row-major, 64-bit dimensions), found at import.  Measured on the development machine, NumPy's
# OpenBLAS (0.3.31) ran the 100x784x50 GEMMs of a training step 10-20% faster than the one
# SciPy bundles (0.3.30), and with one BLAS for both, NumPy code and fastnn share one thread
# pool instead of two pools competing for the same cores.
#
# Where NumPy's BLAS cannot be found (another NumPy build, another platform), or with
# FASTNN_BLAS=scipy, the GEMMs go through scipy.linalg.cython_blas, the documented route.  Its
# function pointers are taken from the module's C-API capsules at import, and only then: a
# cimport would import scipy.linalg (a quarter of a second) into every fastnn process.  BLAS is
# column-major there: a row-major m x n array is, to it, its own n x m transpose, so
# C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T (same flags, operands
# and m, n swapped).
#
# BLAS_PATH names the library in use; fastnn.threads sets its thread count.
import ctypes
import os

from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport int64_t

ctypedef void (*cblas_sgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n,
                               int64_t k, float alpha, const float *a, int64_t lda,
                               const float *b, int64_t ldb, float beta, float *c,
                               int64_t ldc) noexcept nogil
ctypedef void (*cblas_dgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n,
                               int64_t k, double alpha, const double *a, int64_t lda,
                               const double *b, int64_t ldb, double beta, double *c,
                               int64_t ldc) noexcept nogil

# scipy.linalg.cython_blas's Fortran-convention GEMMs (every argument by pointer)
ctypedef void (*fortran_sgemm_t)(char *transa, char *transb, int *m, int *n, int *k,
                                 float *alpha, float *a, int *lda, float *b, int *ldb,
                                 float *beta, float *c, int *ldc) noexcept nogil
ctypedef void (*fortran_dgemm_t)(char *transa, char *transb, int *m, int *n, int *k,
                                 double *alpha, double *a, int *lda, double *b, int *ldb,
                                 double *beta, double *c, int *ldc) noexcept nogil

cdef enum:
    CBLAS_ROW_MAJOR = 101
    CBLAS_NO_TRANS = 111
    CBLAS_TRANS = 112

cdef cblas_sgemm_t _cblas_sgemm = NULL
cdef cblas_dgemm_t _cblas_dgemm = NULL
cdef fortran_sgemm_t scipy_sgemm = NULL
cdef fortran_dgemm_t scipy_dgemm = NULL


def _numpy_cblas():
    """(path, sgemm, dgemm addresses) of NumPy's ILP64 OpenBLAS, or None."""
    try:
        import numpy
        from threadpoolctl import ThreadpoolController

        numpy_dir = os.path.dirname(os.path.abspath(numpy.__file__))
        for lib in ThreadpoolController().select(internal_api="openblas").lib_controllers:
            path = os.path.abspath(lib.filepath)
            if not path.startswith((numpy_dir + os.sep, numpy_dir + ".libs" + os.sep)):
                continue
            handle = ctypes.CDLL(path)  # already loaded by NumPy: the same library
            # the 64-bit integer (ILP64) CBLAS of NumPy's wheels, which cblas_*gemm_t declares
            for prefix in ("scipy_", ""):
                s = getattr(handle, f"{prefix}cblas_sgemm64_", None)
                d = getattr(handle, f"{prefix}cblas_dgemm64_", None)
                if s is not None and d is not None:
                    return (path, ctypes.cast(s, ctypes.c_void_p).value,
                            ctypes.cast(d, ctypes.c_void_p).value)
    except Exception:  # any surprise in another NumPy build: use SciPy's route
        return None
    return None


cdef void *_capsule_pointer(object capsule) except NULL:
    return PyCapsule_GetPointer(capsule, PyCapsule_GetName(capsule))


def _scipy_blas_path():
    try:
        import scipy
        from threadpoolctl import ThreadpoolController

        scipy_dir = os.path.dirname(os.path.abspath(scipy.__file__))
        for lib in ThreadpoolController().select(user_api="blas").lib_controllers:
            if os.path.abspath(lib.filepath).startswith((scipy_dir + os.sep, scipy_dir + ".libs" + os.sep)):
                return lib.filepath
    except Exception:
        pass
    return None


_found = None if os.environ.get("FASTNN_BLAS") == "scipy" else _numpy_cblas()
if _found is not None:
    BLAS_PATH = _found[0]
    _cblas_sgemm = <cblas_sgemm_t> <size_t> _found[1]
    _cblas_dgemm = <cblas_dgemm_t> <size_t> _found[2]
else:
    from scipy.linalg import cython_blas

    scipy_sgemm = <fortran_sgemm_t> _capsule_pointer(cython_blas.__pyx_capi__["sgemm"])
    scipy_dgemm = <fortran_dgemm_t> _capsule_pointer(cython_blas.__pyx_capi__["dgemm"])
    BLAS_PATH = _scipy_blas_path()
BLAS_ROUTE = "numpy-cblas" if _found is not None else "scipy-cython_blas"


cdef inline int _ld(int ld) noexcept nogil:
    return ld if ld > 1 else 1  # BLAS demands leading dimensions >= 1, even for empty operands


cdef void sgemm(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const float *a,
                int lda, const float *b, int ldb, float beta, float *c, int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    lda, ldb, ldc = _ld(lda), _ld(ldb), _ld(ldc)
    if _cblas_sgemm != NULL:
        _cblas_sgemm(CBLAS_ROW_MAJOR, CBLAS_TRANS if trans_a else CBLAS_NO_TRANS,
                     CBLAS_TRANS if trans_b else CBLAS_NO_TRANS, m, n, k, alpha, a, lda, b, ldb,
                     beta, c, ldc)
    else:
        scipy_sgemm(&tb, &ta, &n, &m, &k, &alpha, <float *> b, &ldb, <float *> a, &lda,
                    &beta, c, &ldc)


cdef void dgemm(bint trans_a, bint trans_b, int m, int n, int k, double alpha,
                const double *a, int lda, const double *b, int ldb, double beta, double *c,
                int ldc) noexcept nogil:
    cdef char ta = b'T' if trans_a else b'N'
    cdef char tb = b'T' if trans_b else b'N'
    lda, ldb, ldc = _ld(lda), _ld(ldb), _ld(ldc)
    if _cblas_dgemm != NULL:
        _cblas_dgemm(CBLAS_ROW_MAJOR, CBLAS_TRANS if trans_a else CBLAS_NO_TRANS,
                     CBLAS_TRANS if trans_b else CBLAS_NO_TRANS, m, n, k, alpha, a, lda, b, ldb,
                     beta, c, ldc)
    else:
        scipy_dgemm(&tb, &ta, &n, &m, &k, &alpha, <double *> b, &ldb, <double *> a, &lda, &beta,
                    c, &ldc)
