# The first dense layer on a sparse batch (_sparse.pyx): the networks' one door to the kernels
# of src_c/fnn_sparse.h.
from libc.stdint cimport int32_t


cdef struct SparseOps:
    bint f32                 # the dtype of the pass: float32, else float64
    Py_ssize_t n, K          # rows and features of the batches the buffers hold
    Py_ssize_t max_nnz       # the most nonzeros of a batch that takes the sparse path
    void *val                # the CSR of the batch: values, columns, row starts
    int32_t *col
    int32_t *ptr
    void *cval               # its CSC (backward passes only, else NULL): values, rows, starts
    int32_t *crow
    int32_t *cptr
    bint built               # whether the CSR holds this call's batch (it was sparse enough)
    const float *x32         # a float64 pass's float32 batch, widened here; else NULL
    double *x64              # its float64 copy, made only for a dense GEMM (else NULL)
    bint widened             # whether x64 holds this call's batch


# out (n, N) = x (n, K) @ W (K, N) over the nonzeros of x, when x is sparse enough and W
# finite; returns whether it did (else the caller runs its dense GEMM on dense_input).  All
# arrays C-contiguous of the pass's dtype, but x, which is x32 where that is set.
cdef bint forward(SparseOps *sp, const void *x, int n, int K, int N, const void *W,
                  void *out) noexcept nogil
# The batch x (n x K entries) as the pass's dense GEMM reads it: x itself, or for a float32
# batch of a float64 pass its float64 copy (made on the first call of the pass).
cdef const void *dense_input(SparseOps *sp, const void *x, Py_ssize_t size) noexcept nogil
# dW (K, N) = x.T @ d (n, N) for the batch of the last forward, when it took the sparse path,
# the buffers have the CSC and d is finite; returns whether it did.
cdef bint weight_gradient(SparseOps *sp, int n, int K, int N, const void *d,
                          void *dW) noexcept nogil


# The checked buffers of a pass of ``n`` rows of ``K`` features computing in ``typenum``
# (``sparse``: a Buffers or None; ``x32``: a float64 pass's float32 batch, or NULL), or NULL
# where the pass keeps its dense GEMMs: without buffers, and in bf16 (``bf16``) where the
# operands are not float32 values (the native GEMM's).
cdef SparseOps *buffers_for(object sparse, int typenum, int n, int K, bint backward,
                            bint bf16, const float *x32=*) except? NULL


cdef class Buffers:
    """The CSR and CSC buffers of the passes of a network over batches of up to ``n`` rows,
    checked against the pass before any pointer reaches the nogil code."""
    cdef SparseOps ops
    cdef SparseOps *check(self, int typenum, int n, int K, bint backward,
                          const float *x32=*) except NULL
