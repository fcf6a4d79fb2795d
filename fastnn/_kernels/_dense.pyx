# Design: the dense (Affine / Linear) layer as BLAS GEMMs plus one C pass for the bias.
#
# Every function here takes C-contiguous arrays of one floating dtype that the Python layer
# (fastnn/_validation.py, fastnn/layers.py) has checked for shape agreement and allocated; the
# work runs without the GIL.  The weight W is stored either as in the book's Affine, (in, out),
# or as in Linear / PyTorch, (out, in): ``transpose_w`` says which, and only flips a GEMM flag.
#
# Twins: fastnn.reference.layers.Affine and .Linear.
from cython cimport floating

from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *


cdef inline void _bias_identity(floating *z, const floating *b, Py_ssize_t n,
                                Py_ssize_t k) noexcept nogil:
    if floating is float:
        fnn_bias_activation_f32(z, b, n, k, FNN_IDENTITY)
    else:
        fnn_bias_activation_f64(z, b, n, k, FNN_IDENTITY)


def dense_forward(const floating[:, ::1] x,   # IN  (n, d)
                  const floating[:, ::1] W,   # IN  (d, h), or (h, d) if transpose_w
                  const floating[::1] b,      # IN  (h,)
                  floating[:, ::1] out,       # OUT (n, h)
                  bint transpose_w=False):
    """out = x @ W + b, or x @ W.T + b when ``transpose_w``."""
    cdef int n = x.shape[0], d = x.shape[1], h = out.shape[1]
    if n == 0 or h == 0:
        return
    with nogil:
        # beta = 0 then the bias in a separate pass: the same rounding as NumPy's x @ W + b
        gemm(False, transpose_w, n, h, d, 1, &x[0, 0], d, &W[0, 0], W.shape[1],
             0, &out[0, 0], h)
        _bias_identity(&out[0, 0], &b[0], n, h)


def dense_backward(const floating[:, ::1] dout,  # IN  (n, h)
                   const floating[:, ::1] x,     # IN  (n, d), the forward input
                   const floating[:, ::1] W,     # IN  (d, h), or (h, d) if transpose_w
                   floating[:, ::1] dW_out,      # OUT W's shape
                   floating[::1] db_out,         # OUT (h,)
                   floating[:, ::1] dx_out=None, # OUT (n, d), or None to skip it
                   bint transpose_w=False):
    """dW = x.T @ dout (or dout.T @ x), db = dout.sum(0), dx = dout @ W.T (or dout @ W).

    ``dx_out=None`` skips the input gradient, a third of the work, which the first layer of a
    network never needs.
    """
    cdef int n = dout.shape[0], h = dout.shape[1], d = x.shape[1]
    cdef bint want_dx = dx_out is not None and n > 0 and d > 0
    if h == 0 or d == 0:
        return
    if n == 0:
        # gradients of an empty batch are zero, as NumPy's empty sums are
        dW_out[:, :] = 0
        db_out[:] = 0
        return
    with nogil:
        if transpose_w:
            gemm(True, False, h, d, n, 1, &dout[0, 0], h, &x[0, 0], d, 0, &dW_out[0, 0], d)
            if want_dx:
                gemm(False, False, n, d, h, 1, &dout[0, 0], h, &W[0, 0], d, 0, &dx_out[0, 0], d)
        else:
            gemm(True, False, d, h, n, 1, &x[0, 0], d, &dout[0, 0], h, 0, &dW_out[0, 0], h)
            if want_dx:
                gemm(False, True, n, d, h, 1, &dout[0, 0], h, &W[0, 0], h, 0, &dx_out[0, 0], d)
        if floating is float:
            fnn_column_sum_f32(&dout[0, 0], &db_out[0], n, h)
        else:
            fnn_column_sum_f64(&dout[0, 0], &db_out[0], n, h)
