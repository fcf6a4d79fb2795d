# The one door to fastnn's bfloat16 GEMMs (_bf16.pyx): every GEMM of a precision="bf16"
# network goes through round_operand (once per operand) and gemm, nowhere else.
#
# An operand buffer holds its values in the representation that gemm takes, which only this
# module knows: today bfloat16 values in float32 storage (the low 16 bits zero) for the float32
# GEMM of _blas; with a native bfloat16 GEMM, their bit patterns (uint16).  Callers allocate
# 4 bytes per element, enough for either, and never read the buffers.

cdef void round_operand(const float *x, Py_ssize_t size, void *out) noexcept nogil
# bfloat16 values in float32 storage whatever gemm takes: the operands of fastnn's own float32
# kernels (the convnets' direct convolution), which then compute the bf16 products exactly
cdef void round_values(const float *x, Py_ssize_t size, float *out) noexcept nogil
cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const void *a,
               int lda, const void *b, int ldb, float beta, float *c, int ldc) noexcept nogil
# whether round_operand writes bfloat16 values in float32 storage (the portable path), which
# fastnn's own float32 kernels can read as they are (the sparse first layer's products)
cdef bint float_operands() noexcept nogil


cdef struct Bf16Ops:
    int L            # layers
    int n            # rows of the batch
    const int *s     # L + 1 layer sizes
    void **W         # L rounded weights, (s[l], s[l+1]) each
    void **inp       # L rounded layer inputs, (n, s[l]) each: inp[0] the batch, inp[l] a[l-1]
    void *delta      # (n, max s[1:]): the rounded delta of the layer being walked, or NULL
    bint round_weights  # round W[l] into W this call (the first block of a pass only)


cdef void round_weights(Bf16Ops *bf, float **W) noexcept nogil


cdef class Operands:
    """The operand buffers of one compiled pass of a bf16 network, checked (float32,
    C-contiguous, writable, exact dimensions) before any pointer reaches the nogil code."""
    cdef Bf16Ops ops
    cdef int *_sizes
    cdef void **_pointers
    cdef int check(self, int L, const int *sizes, int n, bint backward) except -1
