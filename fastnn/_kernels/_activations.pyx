# Design: elementwise activations over flat C-contiguous arrays, one C pass each, no GIL.
#
# The Python layer (fastnn/layers.py, fastnn/functions.py) hands over ravelled views of
# C-contiguous arrays of one floating dtype and allocates every output.
#
# Twins: fastnn.reference.layers.Relu / Sigmoid and fastnn.reference.functions.sigmoid.
from cython cimport floating
from libc.stdint cimport uint8_t

from fastnn._kernels._cfnn cimport *


def relu_forward(const floating[::1] x,  # IN
                 floating[::1] out,      # OUT
                 uint8_t[::1] mask_out): # OUT  1 where x <= 0, the book's Relu.mask
    cdef Py_ssize_t size = x.shape[0]
    if size == 0:
        return
    with nogil:
        if floating is float:
            fnn_relu_forward_f32(&x[0], &out[0], &mask_out[0], size)
        else:
            fnn_relu_forward_f64(&x[0], &out[0], &mask_out[0], size)


def relu_backward(const floating[::1] dout,  # IN
                  const uint8_t[::1] mask,   # IN
                  floating[::1] dx_out):     # OUT
    cdef Py_ssize_t size = dout.shape[0]
    if size == 0:
        return
    with nogil:
        if floating is float:
            fnn_relu_backward_f32(&dout[0], &mask[0], &dx_out[0], size)
        else:
            fnn_relu_backward_f64(&dout[0], &mask[0], &dx_out[0], size)


def sigmoid_forward(const floating[::1] x,  # IN
                    floating[::1] out):     # OUT
    cdef Py_ssize_t size = x.shape[0]
    if size == 0:
        return
    with nogil:
        if floating is float:
            fnn_sigmoid_forward_f32(&x[0], &out[0], size)
        else:
            fnn_sigmoid_forward_f64(&x[0], &out[0], size)


def sigmoid_backward(const floating[::1] dout,  # IN
                     const floating[::1] out,   # IN  the forward output
                     floating[::1] dx_out):     # OUT
    cdef Py_ssize_t size = dout.shape[0]
    if size == 0:
        return
    with nogil:
        if floating is float:
            fnn_sigmoid_backward_f32(&dout[0], &out[0], &dx_out[0], size)
        else:
            fnn_sigmoid_backward_f64(&dout[0], &out[0], &dx_out[0], size)
