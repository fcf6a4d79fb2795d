# Design: the one place where fastnn touches BLAS.
#
# Three backends, chosen once, at import, by FASTNN_BLAS (set before fastnn is imported):
#
#   mkl       Intel MKL's CBLAS (the optional extra fastnn[mkl]: the PyPI package ``mkl``, whose
#             libmkl_rt.so.* lands in <prefix>/lib), row-major, 64-bit dimensions
#             (cblas_?gemm_64), dlopened from sys.prefix/lib (the venv), sys.base_prefix/lib
#             or a directory of LD_LIBRARY_PATH.  It also brings cblas_gemm_bf16bf16f32
#             (bfloat16 operands, float32 accumulation and output), offered to the kernels as
#             gemm_bf16 where have_gemm_bf16().
#   openblas  the OpenBLAS that NumPy itself loaded, through its CBLAS interface (row-major,
#             64-bit dimensions), found through threadpoolctl.  Measured on the development
#             machine, NumPy's OpenBLAS (0.3.31) ran the 100x784x50 GEMMs of a training step
#             10-20% faster than the one SciPy bundles (0.3.30), and with one BLAS for both,
#             NumPy code and fastnn share one thread pool instead of two.
#   scipy     scipy.linalg.cython_blas, the documented route.  Its function pointers are taken
#             from the module's C-API capsules at import, and only then: a cimport would import
#             scipy.linalg (a quarter of a second) into every fastnn process.  BLAS is
#             column-major there: a row-major m x n array is, to it, its own n x m transpose,
#             so C = op(A) op(B) is computed as the column-major C^T = op(B)^T op(A)^T (same
#             flags, operands and m, n swapped).
#
# Unset (or empty), the first of mkl, openblas, scipy that is there, MKL only on an Intel CPU:
# on an AMD EPYC (Zen 3) MKL's GEMMs ran the book's steps at 0.75-0.91x OpenBLAS's speed
# (README, "BLAS backends"), so an installed MKL is taken there only when FASTNN_BLAS=mkl asks
# for it.  A value that names no backend raises
# ValueError, and a backend asked for that is not there raises ImportError, both naming
# FASTNN_BLAS: a run that asked for MKL and silently got OpenBLAS would report the wrong
# library's numbers.
#
# MKL's threads: libmkl_rt picks its threading layer at its first call, by default Intel's
# OpenMP (libiomp5), whose idle workers spin for KMP_BLOCKTIME (200 ms) after every parallel
# region, on the cores NumPy's OpenBLAS pool and the Trainer's evaluation thread want.  So,
# unless MKL_THREADING_LAYER says otherwise, fastnn sets the GNU layer (libgomp, whose idle
# threads sleep after a short spin) where libgomp loads, and the sequential layer where it
# does not.  fastnn.threads sets the thread count of whichever library this is, per call
# (threadpoolctl knows MKL), so MKL and OpenBLAS never both run their pools at full count on
# fastnn's behalf.
#
# BLAS_BACKEND names the backend, BLAS_ROUTE the route, BLAS_PATH the library in use.
import ctypes
import glob
import os
import re
import sys

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetName, PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint16_t

from fastnn._kernels._arrays cimport data_2d, dim, float_type

cnp.import_array()

ctypedef void (*cblas_sgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n,
                               int64_t k, float alpha, const float *a, int64_t lda,
                               const float *b, int64_t ldb, float beta, float *c,
                               int64_t ldc) noexcept nogil
ctypedef void (*cblas_dgemm_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n,
                               int64_t k, double alpha, const double *a, int64_t lda,
                               const double *b, int64_t ldb, double beta, double *c,
                               int64_t ldc) noexcept nogil
# MKL's cblas_gemm_bf16bf16f32_64: MKL_BF16 is an unsigned 16-bit integer holding the bits
ctypedef void (*cblas_gemm_bf16_t)(int order, int trans_a, int trans_b, int64_t m, int64_t n,
                                   int64_t k, float alpha, const uint16_t *a, int64_t lda,
                                   const uint16_t *b, int64_t ldb, float beta, float *c,
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

# MKL_Set_Threading_Layer's values (mkl_service.h)
MKL_THREADING_LAYERS = {0: "intel", 1: "sequential", 2: "pgi", 3: "gnu", 4: "tbb"}

cdef cblas_sgemm_t _cblas_sgemm = NULL
cdef cblas_dgemm_t _cblas_dgemm = NULL
cdef cblas_gemm_bf16_t _cblas_gemm_bf16 = NULL
cdef fortran_sgemm_t scipy_sgemm = NULL
cdef fortran_dgemm_t scipy_dgemm = NULL

BACKENDS = ("mkl", "openblas", "scipy")  # FASTNN_BLAS's values, in the order tried when unset


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


def find_mkl():
    """The path of libmkl_rt where the ``mkl`` package (or another MKL) put it, or None.

    Looked for in <prefix>/lib of this environment (where pip installs the ``mkl`` wheel's
    libraries), of the Python it was made from (a venv with system site packages) and of the
    user's base, then in the directories of LD_LIBRARY_PATH: no ldconfig or compiler is run,
    so an import without MKL costs a few stat calls.
    """
    import site

    folders = [os.path.join(p, "lib") for p in (sys.prefix, sys.exec_prefix, sys.base_prefix,
                                                 site.getuserbase())]
    folders += [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    for folder in dict.fromkeys(folders):
        found = sorted((p for p in glob.glob(os.path.join(glob.escape(folder), "libmkl_rt.so*"))
                        if re.fullmatch(r"libmkl_rt\.so(\.\d+)*", os.path.basename(p))),
                       key=lambda p: (len(p), p))  # libmkl_rt.so, then the highest .so.N
        if found:
            best = found[0] if found[0].endswith(".so") else found[len(found) - 1]
            return os.path.abspath(best)
    return None


def _gomp_loads():
    try:
        ctypes.CDLL("libgomp.so.1")
        return True
    except OSError:
        return False


def _mkl_cblas(path):
    """(path, sgemm, dgemm, gemm_bf16 or None addresses, threading layer) of the MKL at
    ``path``; its threading layer is set first (see the design note), before any other call
    into MKL fixes it."""
    handle = ctypes.CDLL(path)
    setter = handle.MKL_Set_Threading_Layer
    setter.restype, setter.argtypes = ctypes.c_int, (ctypes.c_int,)
    if not os.environ.get("MKL_THREADING_LAYER"):
        setter(3 if _gomp_loads() else 1)  # GNU, else sequential
    layer = MKL_THREADING_LAYERS.get(setter(-1), "unknown")  # -1: only reports it
    address = lambda name: ctypes.cast(getattr(handle, name), ctypes.c_void_p).value
    bf16 = getattr(handle, "cblas_gemm_bf16bf16f32_64", None)
    return (path, address("cblas_sgemm_64"), address("cblas_dgemm_64"),
            ctypes.cast(bf16, ctypes.c_void_p).value if bf16 is not None else None, layer)


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


def requested_backend(value=None):
    """The backend FASTNN_BLAS (or ``value``) asks for: one of BACKENDS, or None (unset or
    empty: the first that is there).  ValueError naming the variable for any other value."""
    value = os.environ.get("FASTNN_BLAS", "") if value is None else value
    choice = value.strip().lower()
    if not choice:
        return None
    if choice not in BACKENDS:
        raise ValueError(f"FASTNN_BLAS={value!r} names no BLAS backend of fastnn: expected one "
                         f"of {', '.join(BACKENDS)}, or unset (MKL where installed, else "
                         "NumPy's OpenBLAS, else SciPy's)")
    return choice


def cpuinfo(field):
    """The value of ``field`` ('vendor_id', 'flags', ...) for the first CPU in /proc/cpuinfo,
    or None where it cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(field):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_vendor():
    """The CPU's vendor string as Linux reports it ('GenuineIntel', 'AuthenticAMD', ...), or
    None where /proc/cpuinfo cannot be read."""
    return cpuinfo("vendor_id")


def _unset_order(vendor=None):
    """The backends an unset FASTNN_BLAS tries, in order: MKL first on an Intel CPU only
    (``vendor``, default cpu_vendor()); see the design note."""
    if (vendor or cpu_vendor()) == "GenuineIntel":
        return BACKENDS
    return ("openblas", "mkl", "scipy")


def _find(backend):
    """(found, problem): _mkl_cblas's or _numpy_cblas's tuple (None for scipy, always there),
    or None and why not."""
    if backend == "mkl":
        path = find_mkl()
        if path is None:
            return None, (f"no libmkl_rt was found in {os.path.join(sys.prefix, 'lib')} nor on "
                          "LD_LIBRARY_PATH")
        try:
            return _mkl_cblas(path), None
        except (OSError, AttributeError) as exc:  # unloadable, or without the ILP64 CBLAS
            return None, f"{path} could not be used ({exc})"
    if backend == "openblas":
        found = _numpy_cblas()
        return found, (None if found else
                       "NumPy's OpenBLAS (its ILP64 CBLAS) was not found in this NumPy build")
    return None, None


_INSTALL_HINT = {"mkl": "pip install 'fastnn[mkl]' (the mkl package), or unset FASTNN_BLAS",
                 "openblas": "unset FASTNN_BLAS, or set it to scipy or mkl"}


def _choose(choice, vendor=None):
    """(backend, found) for FASTNN_BLAS's choice (None: unset): found is _mkl_cblas's or
    _numpy_cblas's tuple, None for scipy.  ImportError naming the variable where the choice
    is not there."""
    for backend in (_unset_order(vendor) if choice is None else (choice,)):
        if backend == "scipy":
            return "scipy", None
        found, problem = _find(backend)
        if found is not None:
            return backend, found
        if choice is not None:
            raise ImportError(f"FASTNN_BLAS={backend}, but {problem}: {_INSTALL_HINT[backend]}")


BLAS_BACKEND, _found = _choose(requested_backend())
MKL_THREADING_LAYER = None  # MKL's threading layer (see the design note); None without MKL
if BLAS_BACKEND == "scipy":
    from scipy.linalg import cython_blas

    scipy_sgemm = <fortran_sgemm_t> _capsule_pointer(cython_blas.__pyx_capi__["sgemm"])
    scipy_dgemm = <fortran_dgemm_t> _capsule_pointer(cython_blas.__pyx_capi__["dgemm"])
    BLAS_PATH = _scipy_blas_path()
else:
    BLAS_PATH = _found[0]
    _cblas_sgemm = <cblas_sgemm_t> <size_t> _found[1]
    _cblas_dgemm = <cblas_dgemm_t> <size_t> _found[2]
    if BLAS_BACKEND == "mkl":
        if _found[3] is not None:
            _cblas_gemm_bf16 = <cblas_gemm_bf16_t> <size_t> _found[3]
        MKL_THREADING_LAYER = _found[4]
# Python's view of have_gemm_bf16(): MKL's bfloat16 GEMM is there
HAVE_GEMM_BF16 = _cblas_gemm_bf16 != NULL
BLAS_ROUTE = {"mkl": "mkl-cblas", "openblas": "numpy-cblas",
              "scipy": "scipy-cython_blas"}[BLAS_BACKEND]


def available_backends():
    """The backends FASTNN_BLAS could choose in this environment (a fresh process would find
    them), in the order an unset FASTNN_BLAS tries them: its choice first."""
    out = []
    for backend in _unset_order():
        if (backend == BLAS_BACKEND or backend == "scipy"  # scipy: a dependency, always there
                or (backend == "mkl" and find_mkl() is not None)
                or (backend == "openblas" and _numpy_cblas() is not None)):
            out.append(backend)
    return out


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


cdef bint have_gemm_bf16() noexcept nogil:
    return _cblas_gemm_bf16 != NULL


cdef void gemm_bf16(bint trans_a, bint trans_b, int m, int n, int k, float alpha,
                    const uint16_t *a, int lda, const uint16_t *b, int ldb, float beta,
                    float *c, int ldc) noexcept nogil:
    # only called where have_gemm_bf16(): without MKL there is nothing to call, and nothing is
    # written (the caller takes its portable path instead)
    lda, ldb, ldc = _ld(lda), _ld(ldb), _ld(ldc)
    if _cblas_gemm_bf16 != NULL:
        _cblas_gemm_bf16(CBLAS_ROW_MAJOR, CBLAS_TRANS if trans_a else CBLAS_NO_TRANS,
                         CBLAS_TRANS if trans_b else CBLAS_NO_TRANS, m, n, k, alpha, a, lda, b,
                         ldb, beta, c, ldc)


def _gemm(a, b, c, bint trans_a=False, bint trans_b=False, alpha=1.0, beta=0.0):
    """c = alpha * op(a) @ op(b) + beta * c in place, through this module's GEMMs, for the
    tests: float32 or float64 operands (sgemm, dgemm), or bfloat16 bits in uint16 arrays
    with a float32 c (gemm_bf16, MKL only).  op(x) = x.T where trans_x; C-contiguous arrays."""
    cdef int ta = cnp.PyArray_TYPE(<cnp.ndarray> a) if cnp.PyArray_Check(a) else -1
    cdef int typenum = cnp.NPY_FLOAT32 if ta == cnp.NPY_UINT16 else float_type(a, "a")
    cdef int operand = cnp.NPY_UINT16 if ta == cnp.NPY_UINT16 else typenum
    cdef int m = dim(a, "a", 2, 1 if trans_a else 0)
    cdef int k = dim(a, "a", 2, 0 if trans_a else 1)
    cdef int n = dim(b, "b", 2, 0 if trans_b else 1)
    cdef void *pa = data_2d(a, "a", operand, k if trans_a else m, m if trans_a else k)
    cdef void *pb = data_2d(b, "b", operand, n if trans_b else k, k if trans_b else n)
    cdef void *pc = data_2d(c, "c", typenum, m, n, True)
    cdef int lda = m if trans_a else k
    cdef int ldb = k if trans_b else n
    cdef double al = alpha, be = beta
    if operand == cnp.NPY_UINT16:
        if not have_gemm_bf16():
            raise RuntimeError(f"gemm_bf16 needs MKL's cblas_gemm_bf16bf16f32; this backend "
                               f"is {BLAS_BACKEND}")
        with nogil:
            gemm_bf16(trans_a, trans_b, m, n, k, al, <uint16_t *> pa, lda, <uint16_t *> pb,
                      ldb, be, <float *> pc, n)
    elif typenum == cnp.NPY_FLOAT32:
        with nogil:
            sgemm(trans_a, trans_b, m, n, k, al, <float *> pa, lda, <float *> pb, ldb, be,
                  <float *> pc, n)
    else:
        with nogil:
            dgemm(trans_a, trans_b, m, n, k, al, <double *> pa, lda, <double *> pb, ldb,
                  be, <double *> pc, n)
