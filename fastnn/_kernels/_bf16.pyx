# Design: bfloat16 mixed precision, the rounding and the one door to its GEMMs.
#
# A precision="bf16" network keeps its weights, gradients, optimizer state and activations
# in float32; the two operands of each of its GEMMs are rounded to bfloat16 (round to nearest
# even) and the products accumulate in float32, as mixed-precision training does elsewhere.
#
# This CPU path is portable: round_operand rounds into float32 storage (src_c/fnn_bf16.c,
# scalar and AVX2 bodies chosen at run time), and gemm is _blas's float32 GEMM.  A product of
# two bfloat16 values (8 significant bits each) has at most 16 significant bits and is exact in
# float32, so this is a bfloat16 GEMM with float32 accumulation, up to the order of the sums.
# It costs one pass over each operand on top of the float32 step, and it is shaped so that the
# pass is paid once per operand and step: the networks round each weight once per call (not
# once per GEMM that reads it: forward and backward share it), each layer's input once (the
# forward's copy serves the weight gradient), each delta once (its two GEMMs share it).
#
# The convnets' direct convolution (fastnn/_kernels/_convnet.pyx) is fastnn's own float32
# kernel, not a GEMM: its operands are rounded by round_values (the same rounding, always into
# float32 storage), and the kernel's float32 products and sums are then the bf16 ones.
#
# Every bf16 GEMM goes through round_operand and gemm below: the native bfloat16 GEMM is one
# branch in each (fnn_pack_bf16 writes the uint16 operands it takes; the buffers are sized for
# either).
#
# Native path: where MKL is the BLAS backend (fastnn[mkl]) and the CPU has AVX512_BF16 or
# AMX-BF16, round_operand packs uint16 bit patterns and gemm is MKL's cblas_gemm_bf16bf16f32
# (set_native); the same values, summed by MKL in float32.
#
# Python: round_bf16 / pack_bf16 (the kernels on arrays, for fastnn.functions.round_bf16 and
# the tests), matmul (the door on arrays, for the tests), kernel / set_kernel (which rounding
# body runs; FASTNN_BF16_KERNEL=scalar|avx2 at import), native / set_native (which GEMM),
# describe and cpu_bf16_flags (for fastnn bench).
#
# Twins: fastnn.reference.functions.round_bf16, fastnn.reference.functions.matmul_bf16.
import os

cimport numpy as cnp
from libc.stdint cimport uint16_t
from libc.stdlib cimport free, malloc

from fastnn._kernels._arrays cimport data_2d, dim, flat_data
from fastnn._kernels._blas cimport gemm_bf16, have_gemm_bf16, sgemm

from fastnn._kernels._blas import BLAS_ROUTE, cpuinfo

cnp.import_array()

cdef extern from "fnn_bf16.h" nogil:
    enum:  # enum fnn_bf16_kernel
        FNN_BF16_SCALAR
        FNN_BF16_AVX2
    void fnn_round_bf16(const float *x, float *out, Py_ssize_t size)
    void fnn_pack_bf16(const float *x, uint16_t *out, Py_ssize_t size)
    int fnn_bf16_kernel()
    int fnn_bf16_set_kernel(int kernel)
    int fnn_bf16_have_avx2()

KERNELS = ("scalar", "avx2")


# Whether gemm is the native bfloat16 GEMM (MKL's, on uint16 operands) rather than the portable
# float32 one: set at import (set_native) and only between compiled calls, since an operand
# written in one representation must be read in the same.
cdef bint _native = False


cdef void round_operand(const float *x, Py_ssize_t size, void *out) noexcept nogil:
    """``size`` contiguous floats of ``x`` as a GEMM operand in ``out``."""
    if _native:
        fnn_pack_bf16(x, <uint16_t *> out, size)
    else:
        fnn_round_bf16(x, <float *> out, size)


cdef bint float_operands() noexcept nogil:
    return not _native


cdef void round_values(const float *x, Py_ssize_t size, float *out) noexcept nogil:
    """``size`` contiguous floats of ``x`` rounded to bfloat16 in float32 storage (``out`` may
    be ``x``), for a float32 kernel of fastnn's own rather than for gemm: the same rounding as
    round_operand's portable path, on either path."""
    fnn_round_bf16(x, out, size)


cdef void gemm(bint trans_a, bint trans_b, int m, int n, int k, float alpha, const void *a,
               int lda, const void *b, int ldb, float beta, float *c, int ldc) noexcept nogil:
    """Row-major C[m, n] = alpha * op(A) @ op(B) + beta * C in float32, A and B operands
    written by round_operand (lda, ldb in elements, as _blas.gemm)."""
    if _native:
        gemm_bf16(trans_a, trans_b, m, n, k, alpha, <const uint16_t *> a, lda,
                  <const uint16_t *> b, ldb, beta, c, ldc)
    else:
        sgemm(trans_a, trans_b, m, n, k, alpha, <const float *> a, lda, <const float *> b, ldb,
              beta, c, ldc)


cdef void round_weights(Bf16Ops *bf, float **W) noexcept nogil:
    """The weights ``W`` (bf.L float32 arrays) as operands in bf.W, when the call asks for it:
    once per call, before the forward pass."""
    cdef int l
    if bf.round_weights:
        for l in range(bf.L):
            round_operand(W[l], bf.s[l] * <Py_ssize_t> bf.s[l + 1], bf.W[l])


cdef class Operands:
    def __cinit__(self, list W_out,      # OUT L rounded weights (sizes[l], sizes[l+1])
                  list inputs_out,       # OUT L rounded layer inputs (n, sizes[l])
                  delta_out,             # OUT (n, max(sizes[1:])), or None (forward only)
                  list sizes, int n, bint round_weights):
        cdef int l, L = len(sizes) - 1, widest = 0
        if L < 1:
            raise ValueError("sizes: a network needs at least one layer")
        if len(W_out) != L or len(inputs_out) != L:
            raise ValueError(f"W_out, inputs_out: expected {L} arrays, one per layer, got "
                             f"{len(W_out)} and {len(inputs_out)}")
        self._sizes = <int *> malloc((L + 1) * sizeof(int))
        self._pointers = <void **> malloc(2 * L * sizeof(void *))
        if self._sizes == NULL or self._pointers == NULL:
            raise MemoryError()
        for l in range(L + 1):
            self._sizes[l] = sizes[l]
            if l:
                widest = max(widest, self._sizes[l])
        for l in range(L):
            self._pointers[l] = data_2d(W_out[l], f"W_out[{l}]", cnp.NPY_FLOAT32,
                                        self._sizes[l], self._sizes[l + 1], True)
            self._pointers[L + l] = data_2d(inputs_out[l], f"inputs_out[{l}]", cnp.NPY_FLOAT32,
                                            n, self._sizes[l], True)
        self.ops.L, self.ops.n, self.ops.s = L, n, self._sizes
        self.ops.W, self.ops.inp = self._pointers, self._pointers + L
        self.ops.delta = NULL
        if delta_out is not None:
            self.ops.delta = data_2d(delta_out, "delta_out", cnp.NPY_FLOAT32, n, widest, True)
        self.ops.round_weights = round_weights

    cdef int check(self, int L, const int *sizes, int n, bint backward) except -1:
        """That these buffers fit a pass of ``n`` rows through layers of ``sizes``."""
        cdef int l
        if L != self.ops.L or n != self.ops.n:
            raise ValueError(f"bf16: operand buffers for {self.ops.L} layers and {self.ops.n} "
                             f"rows, the pass has {L} layers and {n} rows")
        for l in range(L + 1):
            if sizes[l] != self._sizes[l]:
                raise ValueError(f"bf16: operand buffers for layer sizes "
                                 f"{[self._sizes[i] for i in range(L + 1)]}, the weights give "
                                 f"{[sizes[i] for i in range(L + 1)]}")
        if backward and self.ops.delta == NULL:
            raise ValueError("bf16: a backward pass needs delta_out")
        return 0

    def __dealloc__(self):
        free(self._sizes)
        free(self._pointers)


def round_bf16(x,      # IN  float32, C-contiguous, any shape
               out):   # OUT float32, as many elements (may be x itself)
    """Round every element of ``x`` to the nearest bfloat16 (ties to even), in float32
    storage: ``out``'s low 16 bits are zero.  NaN stays NaN (quieted), inf stays inf, finite
    values beyond bfloat16's largest round to inf as IEEE rounding gives."""
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> x) if cnp.PyArray_Check(x) else 0
    cdef const float *xp = <const float *> flat_data(x, "x", cnp.NPY_FLOAT32, size)
    cdef float *op = <float *> flat_data(out, "out", cnp.NPY_FLOAT32, size, True)
    if size and xp != op and _overlap(x, out):
        raise ValueError("out: overlaps x without being x")
    with nogil:
        fnn_round_bf16(xp, op, size)


def pack_bf16(x,      # IN  float32, C-contiguous, any shape
              out):   # OUT uint16, as many elements
    """The bfloat16 bit patterns of ``round_bf16(x)`` (the upper 16 bits of each float32),
    the operands of a native bfloat16 GEMM."""
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> x) if cnp.PyArray_Check(x) else 0
    cdef const float *xp = <const float *> flat_data(x, "x", cnp.NPY_FLOAT32, size)
    cdef uint16_t *op = <uint16_t *> flat_data(out, "out", cnp.NPY_UINT16, size, True)
    if size and _overlap(x, out):
        raise ValueError("out: overlaps x")
    with nogil:
        fnn_pack_bf16(xp, op, size)


cdef bint _overlap(a, b):
    cdef char *p = cnp.PyArray_BYTES(<cnp.ndarray> a)
    cdef char *q = cnp.PyArray_BYTES(<cnp.ndarray> b)
    return p < q + cnp.PyArray_NBYTES(<cnp.ndarray> b) and q < p + cnp.PyArray_NBYTES(<cnp.ndarray> a)


def matmul(a, b, bint trans_a, bint trans_b, out):
    """``out = op(round_bf16(a)) @ op(round_bf16(b))`` through the door (round_operand, gemm)
    the networks use; ``a``, ``b`` float32 2-D C-contiguous, op(X) = X.T when trans_x."""
    cdef int ra = dim(a, "a", 2, 0), ca = dim(a, "a", 2, 1)
    cdef int rb = dim(b, "b", 2, 0), cb = dim(b, "b", 2, 1)
    cdef int m = ca if trans_a else ra, k = ra if trans_a else ca
    cdef int kb = cb if trans_b else rb, n = rb if trans_b else cb
    if k != kb:
        raise ValueError(f"a, b: op(a) is {m}x{k} and op(b) {kb}x{n}: inner sizes differ")
    cdef const float *ap = <const float *> data_2d(a, "a", cnp.NPY_FLOAT32, ra, ca)
    cdef const float *bp = <const float *> data_2d(b, "b", cnp.NPY_FLOAT32, rb, cb)
    cdef float *cp = <float *> data_2d(out, "out", cnp.NPY_FLOAT32, m, n, True)
    if _overlap(a, out) or _overlap(b, out):
        raise ValueError("out: overlaps a or b")
    # operand buffers of 4 bytes per element, as the networks allocate them
    cdef cnp.ndarray abuf = cnp.PyArray_EMPTY(1, [max(ra * ca, 1)], cnp.NPY_FLOAT32, 0)
    cdef cnp.ndarray bbuf = cnp.PyArray_EMPTY(1, [max(rb * cb, 1)], cnp.NPY_FLOAT32, 0)
    cdef void *aq = cnp.PyArray_DATA(abuf)
    cdef void *bq = cnp.PyArray_DATA(bbuf)
    with nogil:
        round_operand(ap, ra * <Py_ssize_t> ca, aq)
        round_operand(bp, rb * <Py_ssize_t> cb, bq)
        gemm(trans_a, trans_b, m, n, k, 1, aq, ca, bq, cb, 0, cp, n)


def kernel():
    """The rounding body in use: 'scalar' or 'avx2'."""
    return KERNELS[fnn_bf16_kernel()]


def have_avx2():
    """Whether this build and CPU can run the AVX2 body."""
    return bool(fnn_bf16_have_avx2())


def set_kernel(name):
    """Run the rounding body ``name`` ('scalar', or 'avx2' where the CPU has it), or the CPU's
    choice for None; returns the previous one (the tests run both)."""
    previous = kernel()
    if name is None:
        fnn_bf16_set_kernel(-1)
    elif name not in KERNELS:
        raise ValueError(f"name must be one of {KERNELS} or None, got {name!r}")
    elif name == "avx2" and not fnn_bf16_have_avx2():
        raise ValueError("name: 'avx2' is not available on this CPU or build")
    else:
        fnn_bf16_set_kernel(KERNELS.index(name))
    return previous


def cpu_bf16_flags():
    """The CPU's bfloat16 instructions as Linux reports them ({'avx512_bf16': bool,
    'amx_bf16': bool}), or None where /proc/cpuinfo cannot be read."""
    flags = cpuinfo("flags")
    if flags is None:
        return None
    flags = set(flags.split())
    return {name: name in flags for name in ("avx512_bf16", "amx_bf16")}


def native():
    """Whether the bf16 GEMMs run on the native bfloat16 GEMM (MKL's) rather than the portable
    path."""
    return bool(_native)


def set_native(flag):
    """Run the bf16 GEMMs on MKL's native bfloat16 GEMM (True; MKL must be the BLAS backend),
    on the portable path (False), or as chosen at import (None: native where MKL is the
    backend and the CPU has AVX512_BF16 or AMX-BF16; without them MKL's bfloat16 GEMM was
    slower than the portable path here: README, "BLAS backends").  Returns the previous
    setting.  Only between compiled calls: the tests run both paths."""
    global _native
    previous = bool(_native)
    if flag is None:
        # /proc/cpuinfo is read only where there is a native GEMM to choose
        flag = bool(have_gemm_bf16()) and any((cpu_bf16_flags() or {}).values())
    elif flag and not have_gemm_bf16():
        raise ValueError("flag: the native bfloat16 GEMM needs MKL as the BLAS backend "
                         "(pip install 'fastnn[mkl]', FASTNN_BLAS=mkl)")
    _native = bool(flag)
    return previous


def describe():
    """One line for fastnn bench: which bf16 GEMM runs, and how."""
    if _native:
        return "native: bfloat16 operands (uint16), MKL's cblas_gemm_bf16bf16f32, float32 sums"
    return (f"portable: operands rounded to bfloat16 in float32 storage ({kernel()} kernel), "
            f"float32 GEMM ({BLAS_ROUTE})")


set_native(None)


_forced = os.environ.get("FASTNN_BF16_KERNEL")
if _forced:
    if _forced not in KERNELS:
        raise ValueError(f"FASTNN_BF16_KERNEL must be one of {KERNELS}, got {_forced!r}")
    set_kernel(_forced)
