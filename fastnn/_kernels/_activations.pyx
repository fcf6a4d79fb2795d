# Design: elementwise activations over C-contiguous arrays, one C pass each, no GIL.
#
# The Python layer (fastnn/layers.py, fastnn/functions.py) allocates every output; x's dtype
# (float32 or float64) selects the code and every other array must match it and hold as many
# elements (fastnn/_kernels/_arrays.pxd checks, cheaply, before any pointer is handed on).
#
# Twins: fastnn.reference.layers.Relu / Sigmoid and fastnn.reference.functions.sigmoid.
cimport numpy as cnp
from libc.stdint cimport uint8_t

from fastnn._kernels._arrays cimport flat_data, float_type
from fastnn._kernels._cfnn cimport *

cnp.import_array()


def relu_forward(x,          # IN
                 out,        # OUT x's shape
                 mask_out):  # OUT x's shape, uint8 or bool: 1 where x <= 0, the book's Relu.mask
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> x)
    cdef const void *xp = flat_data(x, "x", typenum, size)
    cdef void *op = flat_data(out, "out", typenum, size, True)
    cdef uint8_t *mp = <uint8_t *> flat_data(mask_out, "mask_out", _mask_type(mask_out), size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_relu_forward_f32(<const float *> xp, <float *> op, mp, size)
        else:
            fnn_relu_forward_f64(<const double *> xp, <double *> op, mp, size)


def relu_backward(dout,      # IN
                  mask,      # IN  dout's shape, uint8 or bool
                  dx_out):   # OUT dout's shape
    cdef int typenum = float_type(dout, "dout")
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> dout)
    cdef const void *gp = flat_data(dout, "dout", typenum, size)
    cdef const uint8_t *mp = <const uint8_t *> flat_data(mask, "mask", _mask_type(mask), size)
    cdef void *dp = flat_data(dx_out, "dx_out", typenum, size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_relu_backward_f32(<const float *> gp, mp, <float *> dp, size)
        else:
            fnn_relu_backward_f64(<const double *> gp, mp, <double *> dp, size)


def sigmoid_forward(x,      # IN
                    out):   # OUT x's shape
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> x)
    cdef const void *xp = flat_data(x, "x", typenum, size)
    cdef void *op = flat_data(out, "out", typenum, size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_sigmoid_forward_f32(<const float *> xp, <float *> op, size)
        else:
            fnn_sigmoid_forward_f64(<const double *> xp, <double *> op, size)


def sigmoid_backward(dout,     # IN
                     out,      # IN  the forward output, dout's shape
                     dx_out):  # OUT dout's shape
    cdef int typenum = float_type(dout, "dout")
    cdef cnp.npy_intp size = cnp.PyArray_SIZE(<cnp.ndarray> dout)
    cdef const void *gp = flat_data(dout, "dout", typenum, size)
    cdef const void *yp = flat_data(out, "out", typenum, size)
    cdef void *dp = flat_data(dx_out, "dx_out", typenum, size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_sigmoid_backward_f32(<const float *> gp, <const float *> yp, <float *> dp, size)
        else:
            fnn_sigmoid_backward_f64(<const double *> gp, <const double *> yp, <double *> dp,
                                     size)


cdef inline int _mask_type(object mask):
    # a bool mask (the book's Relu.mask) is read as the bytes it is stored in: 0 or 1
    if cnp.PyArray_Check(mask) and cnp.PyArray_TYPE(<cnp.ndarray> mask) == cnp.NPY_BOOL:
        return cnp.NPY_BOOL
    return cnp.NPY_UINT8
