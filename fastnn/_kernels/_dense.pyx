# Design: the dense (Affine / Linear) layer as BLAS GEMMs plus one C pass for the bias.
#
# Every function here takes C-contiguous arrays of one floating dtype that the Python layer
# (fastnn/_validation.py, fastnn/layers.py) has checked for shape agreement and allocated; the
# work runs without the GIL.  The weight W is stored either as in the book's Affine, (in, out),
# or as in Linear / PyTorch, (out, in): ``transpose_w`` says which, and only flips a GEMM flag.
#
# The arrays arrive as plain ndarrays, not typed memoryviews: the layer's small GEMMs (batch
# 100 of 50 -> 10) take a microsecond, about what acquiring five memoryviews would add.  The
# dtype of x selects the float32 or float64 code; fastnn/_kernels/_arrays.pxd checks that the
# others match it and have the dimensions the GEMMs will walk, from the arrays themselves.
#
# Twins: fastnn.reference.layers.Affine and .Linear.
cimport numpy as cnp
from cython cimport floating

from fastnn._kernels._arrays cimport data_2d, dim, flat_data, float_type
from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *

cnp.import_array()


cdef void _forward(int n, int d, int h, const floating *x, const floating *W, int ldw,
                   const floating *b, floating *out, bint transpose_w) noexcept nogil:
    # beta = 0 then the bias in a separate pass: the same rounding as NumPy's x @ W + b
    gemm(False, transpose_w, n, h, d, 1, x, d, W, ldw, 0, out, h)
    if floating is float:
        fnn_bias_activation_f32(out, b, n, h, FNN_IDENTITY)
    else:
        fnn_bias_activation_f64(out, b, n, h, FNN_IDENTITY)


cdef void _backward(int n, int d, int h, const floating *dout, const floating *x,
                    const floating *W, floating *dW, floating *db, floating *dx,
                    bint transpose_w) noexcept nogil:
    if transpose_w:
        gemm(True, False, h, d, n, 1, dout, h, x, d, 0, dW, d)
        if dx != NULL:
            gemm(False, False, n, d, h, 1, dout, h, W, d, 0, dx, d)
    else:
        gemm(True, False, d, h, n, 1, x, d, dout, h, 0, dW, h)
        if dx != NULL:
            gemm(False, True, n, d, h, 1, dout, h, W, h, 0, dx, d)
    if floating is float:
        fnn_column_sum_f32(dout, db, n, h)
    else:
        fnn_column_sum_f64(dout, db, n, h)


def dense_forward(x,      # IN  (n, d)
                  W,      # IN  (d, h), or (h, d) if transpose_w
                  b,      # IN  (h,)
                  out,    # OUT (n, h)
                  bint transpose_w=False):
    """out = x @ W + b, or x @ W.T + b when ``transpose_w``."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = dim(x, "x", 2, 0), d = dim(x, "x", 2, 1)
    cdef cnp.npy_intp h = dim(W, "W", 2, 0 if transpose_w else 1)
    cdef const void *xp = data_2d(x, "x", typenum, n, d)
    cdef const void *wp = data_2d(W, "W", typenum, h, d) if transpose_w else \
        data_2d(W, "W", typenum, d, h)
    cdef const void *bp = flat_data(b, "b", typenum, h)
    cdef void *op = data_2d(out, "out", typenum, n, h, True)
    if n == 0 or h == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _forward[float](n, d, h, <float *> xp, <float *> wp, d if transpose_w else h,
                            <float *> bp, <float *> op, transpose_w)
        else:
            _forward[double](n, d, h, <double *> xp, <double *> wp, d if transpose_w else h,
                             <double *> bp, <double *> op, transpose_w)


def dense_backward(dout,         # IN  (n, h)
                   x,            # IN  (n, d), the forward input
                   W,            # IN  (d, h), or (h, d) if transpose_w
                   dW_out,       # OUT W's shape
                   db_out,       # OUT (h,)
                   dx_out=None,  # OUT (n, d), or None to skip it
                   bint transpose_w=False):
    """dW = x.T @ dout (or dout.T @ x), db = dout.sum(0), dx = dout @ W.T (or dout @ W).

    ``dx_out=None`` skips the input gradient, a third of the work, which the first layer of a
    network never needs.
    """
    cdef int typenum = float_type(dout, "dout")
    cdef cnp.npy_intp n = dim(dout, "dout", 2, 0), h = dim(dout, "dout", 2, 1)
    cdef cnp.npy_intp d = dim(x, "x", 2, 1)
    cdef cnp.npy_intp wr = h if transpose_w else d, wc = d if transpose_w else h
    cdef const void *gp = data_2d(dout, "dout", typenum, n, h)
    cdef const void *xp = data_2d(x, "x", typenum, n, d)
    cdef const void *wp = data_2d(W, "W", typenum, wr, wc)
    cdef void *dwp = data_2d(dW_out, "dW_out", typenum, wr, wc, True)
    cdef void *dbp = flat_data(db_out, "db_out", typenum, h, True)
    cdef void *dxp = NULL
    if dx_out is not None:
        dxp = data_2d(dx_out, "dx_out", typenum, n, d, True)
    if n == 0 or h == 0:
        # empty sums are zero, as NumPy's are: every gradient of an empty batch, and dx of a
        # layer without outputs
        dW_out[...] = 0
        db_out[...] = 0
        if dx_out is not None:
            dx_out[...] = 0
        return
    if d == 0:
        # a layer without inputs: dW and dx are empty, db is still the column sum of dout
        db_out[...] = dout.sum(axis=0)
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _backward[float](n, d, h, <float *> gp, <float *> xp, <float *> wp, <float *> dwp,
                             <float *> dbp, <float *> dxp, transpose_w)
        else:
            _backward[double](n, d, h, <double *> gp, <double *> xp, <double *> wp,
                              <double *> dwp, <double *> dbp, <double *> dxp, transpose_w)
