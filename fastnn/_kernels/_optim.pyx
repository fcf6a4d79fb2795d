# Design: the book's optimizers (common/optimizer.py) as one fused C pass per parameter.
#
# fastnn/optim.py validates params, grads and hyper-parameters and creates the state arrays
# (v, h, m) at the first update.  Then, for each parameter, it asks ``kernel_ready`` whether
# the parameter, its gradient and its state are exactly what a kernel needs, and calls one
# function of this module, which releases the GIL around one C loop (src_c/fnn_optim_impl.h)
# that reads and writes each array once, where the NumPy twin walks them several times through
# new temporaries.  Nothing is allocated here.
#
# The arguments are ndarrays, not the typed memoryviews of the other kernel modules: a step
# calls a kernel once per parameter, biases of ten elements included, and acquiring a
# memoryview per array cost more than such a bias's whole update (measured: 0.40 us per call
# with two memoryviews, 0.66 us with four, 0.06 us with ndarrays).  ``kernel_ready`` tells the
# Python layer whether the arrays can go to a kernel (ndarray, C-contiguous, native float32 or
# float64, one dtype and one shape for all, writable outputs, no overlap) or must take the
# NumPy route; every update function still checks dtype, layout and size of what it is handed
# (fastnn/_kernels/_arrays.pxd), so that no array shorter than the parameter reaches a kernel.
#
# Twins: fastnn.reference.optim.SGD / Momentum / Nesterov / AdaGrad / RMSprop / Adam
# (their ``update`` for one key of ``params``).
cimport numpy as cnp

from fastnn._kernels._arrays cimport flat_data, float_type
from fastnn._kernels._coptim cimport *

cnp.import_array()


def kernel_ready(param, other, bint writable=False):
    """Whether ``other`` may go with ``param`` into a kernel of this module.

    True when both are C-contiguous ndarrays of one native float32 or float64 dtype and of one
    shape, ``param`` is writable (``other`` too when ``writable``, for a state array), and
    their memory does not overlap.
    """
    if not (cnp.PyArray_Check(param) and cnp.PyArray_Check(other)):
        return False
    cdef cnp.ndarray p = <cnp.ndarray>param, o = <cnp.ndarray>other
    cdef int typenum = cnp.PyArray_TYPE(p)
    if typenum != cnp.NPY_FLOAT32 and typenum != cnp.NPY_FLOAT64:
        return False
    if cnp.PyArray_TYPE(o) != typenum:
        return False
    if not (cnp.PyArray_ISNOTSWAPPED(p) and cnp.PyArray_ISNOTSWAPPED(o)):
        return False
    if not (cnp.PyArray_IS_C_CONTIGUOUS(p) and cnp.PyArray_IS_C_CONTIGUOUS(o)):
        return False
    if not cnp.PyArray_ISWRITEABLE(p) or (writable and not cnp.PyArray_ISWRITEABLE(o)):
        return False
    if not cnp.PyArray_SAMESHAPE(p, o):
        return False
    cdef char *a = cnp.PyArray_BYTES(p)
    cdef char *b = cnp.PyArray_BYTES(o)
    cdef cnp.npy_intp nbytes = cnp.PyArray_NBYTES(p)
    return nbytes == 0 or a + nbytes <= b or b + nbytes <= a


cdef inline bint _is_f32(cnp.ndarray a) noexcept nogil:
    return cnp.PyArray_TYPE(a) == cnp.NPY_FLOAT32


cdef inline void *_state(object a, str name, cnp.ndarray param) except NULL:
    return flat_data(a, name, cnp.PyArray_TYPE(param), cnp.PyArray_SIZE(param), True)


def sgd_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
               cnp.ndarray grad not None,       # IN
               double lr):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    with nogil:
        if _is_f32(param_out):
            fnn_sgd_update_f32(<float *>p, <const float *>g, size, lr)
        else:
            fnn_sgd_update_f64(<double *>p, <const double *>g, size, lr)


def momentum_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
                    cnp.ndarray grad not None,       # IN
                    cnp.ndarray v_out not None,      # IN/OUT the velocity
                    double lr, double momentum):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    cdef void *v = _state(v_out, "v_out", param_out)
    with nogil:
        if _is_f32(param_out):
            fnn_momentum_update_f32(<float *>p, <const float *>g, <float *>v, size, lr, momentum)
        else:
            fnn_momentum_update_f64(<double *>p, <const double *>g, <double *>v, size, lr,
                                    momentum)


def nesterov_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
                    cnp.ndarray grad not None,       # IN
                    cnp.ndarray v_out not None,      # IN/OUT the velocity
                    double lr, double momentum):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    cdef void *v = _state(v_out, "v_out", param_out)
    with nogil:
        if _is_f32(param_out):
            fnn_nesterov_update_f32(<float *>p, <const float *>g, <float *>v, size, lr, momentum)
        else:
            fnn_nesterov_update_f64(<double *>p, <const double *>g, <double *>v, size, lr,
                                    momentum)


def adagrad_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
                   cnp.ndarray grad not None,       # IN
                   cnp.ndarray h_out not None,      # IN/OUT the sum of squared gradients
                   double lr):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    cdef void *h = _state(h_out, "h_out", param_out)
    with nogil:
        if _is_f32(param_out):
            fnn_adagrad_update_f32(<float *>p, <const float *>g, <float *>h, size, lr)
        else:
            fnn_adagrad_update_f64(<double *>p, <const double *>g, <double *>h, size, lr)


def rmsprop_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
                   cnp.ndarray grad not None,       # IN
                   cnp.ndarray h_out not None,      # IN/OUT moving average of squared gradients
                   double lr, double decay_rate):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    cdef void *h = _state(h_out, "h_out", param_out)
    with nogil:
        if _is_f32(param_out):
            fnn_rmsprop_update_f32(<float *>p, <const float *>g, <float *>h, size, lr,
                                   decay_rate)
        else:
            fnn_rmsprop_update_f64(<double *>p, <const double *>g, <double *>h, size, lr,
                                   decay_rate)


def adam_update(cnp.ndarray param_out not None,  # IN/OUT updated in place
                cnp.ndarray grad not None,       # IN
                cnp.ndarray m_out not None,      # IN/OUT first-moment estimate
                cnp.ndarray v_out not None,      # IN/OUT second-moment estimate
                double lr_t,                     # the bias-corrected learning rate of this step
                double beta1, double beta2):
    float_type(param_out, "param_out")
    cdef fnn_index size = cnp.PyArray_SIZE(param_out)
    cdef void *p = _state(param_out, "param_out", param_out)
    cdef const void *g = flat_data(grad, "grad", cnp.PyArray_TYPE(param_out), size)
    cdef void *m = _state(m_out, "m_out", param_out)
    cdef void *v = _state(v_out, "v_out", param_out)
    with nogil:
        if _is_f32(param_out):
            fnn_adam_update_f32(<float *>p, <const float *>g, <float *>m, <float *>v, size,
                                lr_t, beta1, beta2)
        else:
            fnn_adam_update_f64(<double *>p, <const double *>g, <double *>m, <double *>v, size,
                                lr_t, beta1, beta2)
