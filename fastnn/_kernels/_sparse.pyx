# Design: the first dense layer of a network on a sparse batch.
#
# Images are mostly background: an MNIST batch is 19% nonzero.  The first layer's two GEMMs
# read the batch x, the forward x @ W and the weight gradient x.T @ d, and a dense GEMM
# multiplies every zero.  Over the nonzeros only (src_c/fnn_sparse.h) they do a fifth of the
# work.  The batch is compressed once per call (CSR), for both products; the weight gradient
# walks it by columns (CSC, a counting sort of the CSR).  benchmarks/bench_sparse.py, MNIST
# batches of 100 and 50 units, one thread, AMD EPYC (Zen 3), medians: float64 x @ W 174 us
# against OpenBLAS's 282, x.T @ d 225 against 286 (each with its own compression, which a
# step shares); float32 97 against 130, 142 against 144.  Through TwoLayerNet(784, 50, 10)
# against the same network on dense GEMMs (medians of 5 interleaved rounds in one process):
# float64 gradient 462 us against 698, loss 256 against 400, accuracy over the 10,000 test
# images 21 ms against 47; float32 330 against 419, 201 against 239, 16 against 22 ms.
#
# A float64 network given float32 images (the book's scripts: float32 images, float64
# weights) takes them as they are: the compression widens each nonzero (exactly), and only a
# dense GEMM (a dense batch, a non-finite operand) needs the float64 copy, made then
# (dense_input).  NumPy, and fastnn before, copied the whole batch to float64 first.
#
# When: a batch whose nonzeros are at most a quarter of its entries (MAX_DENSITY; at the
# quarter the two products with the compression cost about what OpenBLAS's GEMMs do here),
# found out while compressing it: the compression gives up as soon as the count passes the
# quarter, or the first row alone passes half, so a dense batch costs a row's compression.
# In bf16 (on its portable path, whose operands are bfloat16 values in float32 storage) the
# networks hand these kernels the rounded operands: the batch, W and d as the bf16 GEMM would
# read them, whose products are exact in float32 and summed in float32, as that GEMM's.
#
# Same values as the dense GEMM: a zero of x adds exactly zero to each product, except that
# 0 * inf and 0 * NaN are NaN.  So the path is taken only while the other operand (W for the
# forward, d for the weight gradient) is finite, which is checked each call (a pass over W, a
# fiftieth of the GEMM).  Each output is one sum in the features' (or rows') order, with fused
# multiply-adds, as a GEMM's inner product; only the blocking of OpenBLAS's sums differs, so
# results agree to rounding (the tests hold them to the twins as every compiled path).
#
# Python: Buffers (the networks' workspaces hold one), and compress / matmul / matmul_tn (the
# kernels on arrays, for the tests and benchmarks), kernel / kernels / set_kernel (which
# compression body runs, which can).
#
# Twins: np.dot (the products), fastnn.reference.nets (the networks).
cimport numpy as cnp
from libc.stdint cimport INT32_MAX, int32_t
from libc.stdlib cimport free, malloc
from libc.string cimport memcpy

from fastnn._kernels cimport _bf16
from fastnn._kernels._arrays cimport data_2d, dim, float_type

cnp.import_array()

cdef extern from "fnn_sparse.h" nogil:
    Py_ssize_t FNN_SPARSE_ROOM(Py_ssize_t max_nnz, Py_ssize_t K)
    enum:  # enum fnn_sparse_kernel
        FNN_SPARSE_SCALAR
        FNN_SPARSE_AVX2
    int fnn_sparse_kernel()
    int fnn_sparse_set_kernel(int kernel)
    Py_ssize_t fnn_sparse_rows_f32(const float *x, Py_ssize_t n, Py_ssize_t K, Py_ssize_t ldx,
                                   Py_ssize_t max_nnz, float *val, int32_t *col, int32_t *ptr)
    Py_ssize_t fnn_sparse_rows_f64(const double *x, Py_ssize_t n, Py_ssize_t K, Py_ssize_t ldx,
                                   Py_ssize_t max_nnz, double *val, int32_t *col, int32_t *ptr)
    void fnn_sparse_columns_f32(Py_ssize_t n, Py_ssize_t K, const float *val, const int32_t *col,
                                const int32_t *ptr, float *cval, int32_t *crow, int32_t *cptr)
    void fnn_sparse_columns_f64(Py_ssize_t n, Py_ssize_t K, const double *val,
                                const int32_t *col, const int32_t *ptr, double *cval,
                                int32_t *crow, int32_t *cptr)
    Py_ssize_t fnn_sparse_rows_f32_f64(const float *x, Py_ssize_t n, Py_ssize_t K,
                                       Py_ssize_t ldx, Py_ssize_t max_nnz, double *val,
                                       int32_t *col, int32_t *ptr)
    void fnn_widen_f32_f64(const float *x, Py_ssize_t size, double *out)
    void fnn_sparse_gemm_f32(Py_ssize_t n, Py_ssize_t N, const float *val, const int32_t *col,
                             const int32_t *ptr, const float *W, Py_ssize_t ldw, float *out,
                             Py_ssize_t ldo)
    void fnn_sparse_gemm_f64(Py_ssize_t n, Py_ssize_t N, const double *val, const int32_t *col,
                             const int32_t *ptr, const double *W, Py_ssize_t ldw, double *out,
                             Py_ssize_t ldo)
    void fnn_sparse_gemm_tn_f32(Py_ssize_t K, Py_ssize_t N, const float *cval,
                                const int32_t *crow, const int32_t *cptr, const float *d,
                                Py_ssize_t ldd, float *dW, Py_ssize_t ldw)
    void fnn_sparse_gemm_tn_f64(Py_ssize_t K, Py_ssize_t N, const double *cval,
                                const int32_t *crow, const int32_t *cptr, const double *d,
                                Py_ssize_t ldd, double *dW, Py_ssize_t ldw)
    int fnn_all_finite_f32(const float *a, Py_ssize_t size)
    int fnn_all_finite_f64(const double *a, Py_ssize_t size)

KERNELS = ("scalar", "avx2")
# the largest fraction of nonzeros that takes the sparse path (the Design block says why)
MAX_DENSITY = 0.25


cdef bint _compress(SparseOps *sp, const void *x, int n, int K) noexcept nogil:
    cdef Py_ssize_t nnz
    if sp.x32 != NULL:
        nnz = fnn_sparse_rows_f32_f64(sp.x32, n, K, K, sp.max_nnz, <double *> sp.val, sp.col,
                                      sp.ptr)
    elif sp.f32:
        nnz = fnn_sparse_rows_f32(<const float *> x, n, K, K, sp.max_nnz, <float *> sp.val,
                                  sp.col, sp.ptr)
    else:
        nnz = fnn_sparse_rows_f64(<const double *> x, n, K, K, sp.max_nnz, <double *> sp.val,
                                  sp.col, sp.ptr)
    return nnz >= 0


cdef bint _finite(SparseOps *sp, const void *a, Py_ssize_t size) noexcept nogil:
    if sp.f32:
        return fnn_all_finite_f32(<const float *> a, size)
    return fnn_all_finite_f64(<const double *> a, size)


cdef bint forward(SparseOps *sp, const void *x, int n, int K, int N, const void *W,
                  void *out) noexcept nogil:
    sp.built = _compress(sp, x, n, K)
    if not sp.built or not _finite(sp, W, K * <Py_ssize_t> N):
        return False
    if sp.f32:
        fnn_sparse_gemm_f32(n, N, <const float *> sp.val, sp.col, sp.ptr, <const float *> W, N,
                            <float *> out, N)
    else:
        fnn_sparse_gemm_f64(n, N, <const double *> sp.val, sp.col, sp.ptr, <const double *> W,
                            N, <double *> out, N)
    return True


cdef const void *dense_input(SparseOps *sp, const void *x, Py_ssize_t size) noexcept nogil:
    if sp == NULL or sp.x32 == NULL:
        return x
    if not sp.widened:
        fnn_widen_f32_f64(sp.x32, size, sp.x64)
        sp.widened = True
    return sp.x64


cdef bint weight_gradient(SparseOps *sp, int n, int K, int N, const void *d,
                          void *dW) noexcept nogil:
    if not sp.built or sp.cval == NULL or not _finite(sp, d, n * <Py_ssize_t> N):
        return False
    if sp.f32:
        fnn_sparse_columns_f32(n, K, <const float *> sp.val, sp.col, sp.ptr, <float *> sp.cval,
                               sp.crow, sp.cptr)
        fnn_sparse_gemm_tn_f32(K, N, <const float *> sp.cval, sp.crow, sp.cptr,
                               <const float *> d, N, <float *> dW, N)
    else:
        fnn_sparse_columns_f64(n, K, <const double *> sp.val, sp.col, sp.ptr,
                               <double *> sp.cval, sp.crow, sp.cptr)
        fnn_sparse_gemm_tn_f64(K, N, <const double *> sp.cval, sp.crow, sp.cptr,
                               <const double *> d, N, <double *> dW, N)
    return True


cdef SparseOps *buffers_for(object sparse, int typenum, int n, int K, bint backward,
                            bint bf16, const float *x32=NULL) except? NULL:
    if sparse is None or (bf16 and not _bf16.float_operands()):
        return NULL
    if not isinstance(sparse, Buffers):
        raise TypeError(f"sparse: expected a _sparse.Buffers or None, got "
                        f"{type(sparse).__name__}")
    return (<Buffers> sparse).check(typenum, n, K, backward, x32)


cdef class Buffers:
    def __cinit__(self, Py_ssize_t n, Py_ssize_t K, dtype):
        if n < 0 or K < 0:
            raise ValueError(f"n, K: expected sizes >= 0, got n={n}, K={K}")
        dtype = cnp.dtype(dtype)
        if dtype not in (cnp.dtype("float32"), cnp.dtype("float64")):
            raise TypeError(f"dtype: expected float32 or float64, got {dtype}")
        self.ops.f32 = dtype == cnp.dtype("float32")
        self.ops.n, self.ops.K = n, K
        # the kernels' indices are int32: a batch of more entries is never compressed (-1:
        # the compression gives up before its first row), only widened
        self.ops.max_nnz = int(MAX_DENSITY * n * K) if n * K <= INT32_MAX else -1
        room = FNN_SPARSE_ROOM(self.ops.max_nnz, K)
        self.ops.val = malloc(room * dtype.itemsize)
        self.ops.col = <int32_t *> malloc(room * sizeof(int32_t))
        self.ops.ptr = <int32_t *> malloc((n + 1) * sizeof(int32_t))
        if self.ops.val == NULL or self.ops.col == NULL or self.ops.ptr == NULL:
            raise MemoryError()
        self.ops.built = False

    cdef SparseOps *check(self, int typenum, int n, int K, bint backward,
                          const float *x32=NULL) except NULL:
        """The buffers for a pass of ``n`` rows of ``K`` features in ``typenum`` (a float64
        one given the float32 batch ``x32``, or NULL); a backward pass allocates the CSC the
        first time, a widening one the float64 copy."""
        if (typenum == cnp.NPY_FLOAT32) != self.ops.f32 or n > self.ops.n or K != self.ops.K \
                or (x32 != NULL and self.ops.f32):
            raise ValueError(
                f"sparse: buffers for up to {self.ops.n} rows of {self.ops.K} "
                f"{'float32' if self.ops.f32 else 'float64'} features, the pass has {n} rows "
                f"of {K} {cnp.PyArray_DescrFromType(typenum)}")
        if backward and self.ops.cval == NULL:
            room = FNN_SPARSE_ROOM(self.ops.max_nnz, K)
            self.ops.crow = <int32_t *> malloc(room * sizeof(int32_t))
            self.ops.cptr = <int32_t *> malloc((K + 1) * sizeof(int32_t))
            self.ops.cval = malloc(room * (4 if self.ops.f32 else 8))
            if self.ops.cval == NULL or self.ops.crow == NULL or self.ops.cptr == NULL:
                raise MemoryError()
        if x32 != NULL and self.ops.x64 == NULL:
            self.ops.x64 = <double *> malloc(max(self.ops.n * K, 1) * sizeof(double))
            if self.ops.x64 == NULL:
                raise MemoryError()
        self.ops.x32, self.ops.widened, self.ops.built = x32, False, False
        return &self.ops

    def __reduce__(self):
        # scratch space: a copy (copy.deepcopy or pickle of a network) is new empty buffers
        return Buffers, (self.ops.n, self.ops.K, "float32" if self.ops.f32 else "float64")

    @property
    def built(self):
        """Whether the last pass through these buffers found its batch sparse enough (its
        products then took the sparse path where their other operand was finite)."""
        return bool(self.ops.built)

    def __dealloc__(self):
        free(self.ops.val)
        free(self.ops.col)
        free(self.ops.ptr)
        free(self.ops.cval)
        free(self.ops.crow)
        free(self.ops.cptr)
        free(self.ops.x64)


# ---- the kernels on arrays, for the tests ----------------------------------------------------

cdef SparseOps *_ops_for(Buffers b, x, bint backward, int *n, int *K,
                         const void **xp) except NULL:
    cdef int typenum = float_type(x, "x")
    n[0], K[0] = dim(x, "x", 2, 0), dim(x, "x", 2, 1)
    xp[0] = data_2d(x, "x", typenum, n[0], K[0])
    return b.check(typenum, n[0], K[0], backward)


def _buffers(x, buffers):
    float_type(x, "x")
    if not (cnp.PyArray_Check(x) and cnp.PyArray_NDIM(<cnp.ndarray> x) == 2
            and x.shape[0] >= 1 and x.shape[1] >= 1):
        raise ValueError(f"x: expected a 2-D array of at least one row and one feature, got "
                         f"shape {cnp.PyArray_Check(x) and x.shape}")
    if buffers is None:
        return Buffers(x.shape[0], x.shape[1], x.dtype)
    if not isinstance(buffers, Buffers):
        raise TypeError(f"buffers: expected a _sparse.Buffers or None, got "
                        f"{type(buffers).__name__}")
    return buffers


def compress(x, buffers=None):
    """The CSR and CSC of a 2-D C-contiguous float ``x`` as two triples, ``(values, columns,
    row_starts)`` and ``(values, rows, column_starts)``, or None where the path refuses ``x``
    (more than MAX_DENSITY of it nonzero).  ``buffers``: a Buffers to compress into (fitting
    ``x``), else new ones."""
    cdef Buffers b = _buffers(x, buffers)
    cdef int n, K
    cdef const void *xp
    cdef SparseOps *sp = _ops_for(b, x, True, &n, &K, &xp)
    cdef bint ok
    with nogil:
        ok = _compress(sp, xp, n, K)
        if ok:
            if sp.f32:
                fnn_sparse_columns_f32(n, K, <const float *> sp.val, sp.col, sp.ptr,
                                       <float *> sp.cval, sp.crow, sp.cptr)
            else:
                fnn_sparse_columns_f64(n, K, <const double *> sp.val, sp.col, sp.ptr,
                                       <double *> sp.cval, sp.crow, sp.cptr)
    if not ok:
        return None
    cdef Py_ssize_t nnz = sp.ptr[n]
    return ((_array(sp.val, nnz, x.dtype), _array(sp.col, nnz, "int32"),
             _array(sp.ptr, n + 1, "int32")),
            (_array(sp.cval, nnz, x.dtype), _array(sp.crow, nnz, "int32"),
             _array(sp.cptr, K + 1, "int32")))


cdef object _array(const void *p, Py_ssize_t size, dtype):
    cdef cnp.ndarray out = cnp.PyArray_EMPTY(1, [size], cnp.dtype(dtype).num, 0)
    memcpy(cnp.PyArray_DATA(out), p, size * out.itemsize)
    return out


def matmul(x, W, out, buffers=None):
    """``out = x @ W`` through the networks' door (x: (n, K), W: (K, N), out: (n, N), one
    float dtype, C-contiguous); returns whether the sparse path ran (else ``out`` is as it
    was).  ``buffers`` as compress's."""
    return _product(x, W, "W", out, buffers, False)


def matmul_tn(x, d, out, buffers=None):
    """``out = x.T @ d`` through the networks' door (x: (n, K), d: (n, N), out: (K, N), one
    float dtype, C-contiguous); returns whether the sparse path ran (else ``out`` is as it
    was).  ``buffers`` as compress's."""
    return _product(x, d, "d", out, buffers, True)


cdef bint _product(x, other, str name, out, buffers, bint transposed) except -1:
    cdef Buffers b = _buffers(x, buffers)
    cdef int n, K
    cdef const void *xp
    cdef SparseOps *sp = _ops_for(b, x, transposed, &n, &K, &xp)
    cdef int typenum = float_type(x, "x"), N = dim(other, name, 2, 1)
    cdef const void *p = data_2d(other, name, typenum, n if transposed else K, N)
    cdef void *op = data_2d(out, "out", typenum, K if transposed else n, N, True)
    cdef bint ran
    if N == 0:
        raise ValueError(f"{name}: expected at least one column, got shape {other.shape}")
    with nogil:
        if transposed:
            sp.built = _compress(sp, xp, n, K)
            ran = weight_gradient(sp, n, K, N, p, op)
        else:
            ran = forward(sp, xp, n, K, N, p, op)
    return ran


def kernel():
    """The compression body in use: 'scalar' or 'avx2'."""
    return KERNELS[fnn_sparse_kernel()]


def kernels():
    """The compression bodies this build and CPU can run ('scalar', and 'avx2' where the CPU
    has AVX2), for the tests and benchmarks to run each."""
    cdef int previous = fnn_sparse_kernel()
    names = ["scalar"]
    if fnn_sparse_set_kernel(FNN_SPARSE_AVX2) == FNN_SPARSE_AVX2:
        names.append("avx2")
    fnn_sparse_set_kernel(previous)
    return names


def set_kernel(name):
    """Run the compression body ``name`` ('scalar', or 'avx2' where the CPU has it), or the
    CPU's choice for None; returns the previous one (the tests run both)."""
    previous = kernel()
    if name is None:
        fnn_sparse_set_kernel(-1)
    elif name not in KERNELS:
        raise ValueError(f"name must be one of {KERNELS} or None, got {name!r}")
    elif fnn_sparse_set_kernel(KERNELS.index(name)) != KERNELS.index(name):
        raise ValueError(f"name: {name!r} is not available on this CPU or build")
    return previous
