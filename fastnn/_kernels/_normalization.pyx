# Design: the book's Dropout and BatchNormalization (common/layers.py) as C passes.
#
# fastnn/layers.py validates shapes and dtypes, flattens a 4-D batch to (N, C*H*W) as the
# book does, allocates every output and calls one function here, which checks each array it
# is handed (fastnn/_kernels/_arrays.pxd) and releases the GIL around one C kernel
# (src_c/fnn_normalization_impl.h).  The same kernels serve the whole-network training step
# of MultiLayerNetExtend (_network_extend.pyx), with the activation and the dropout mask
# fused into batch normalization's second pass.
#
# Dropout masks: the book draws np.random.rand(*x.shape) > ratio from NumPy's global
# generator.  ``dropout_mask`` draws the same doubles in the same order from the bit generator
# it is given (np.random.get_bit_generator() for the book's stream, or a Generator's), under
# that generator's lock, so a script seeded with np.random.seed gets the book's masks and
# leaves the generator where the book would.  For NumPy's MT19937 the words are regenerated and
# tempered by fnn_dropout_mask_mt19937 on the generator's own state, in vectorised passes:
# NumPy's per-double call costs more than all of batch normalization at the book's sizes.
# The state layout it relies on (numpy/random/src/mt19937/mt19937.h) is checked against
# NumPy at import; if it ever differs, every draw goes through NumPy's next_double instead.
#
# Batch normalization: training forward is two passes over the batch (the column sums,
# shifted by the first row so that one pass gives mean and variance without cancellation,
# then normalise, scale and shift); backward is two (the column sums of g and xn g, then dx
# in closed form).  Statistics and sums are in double for float32 data as well; the running
# statistics are float64 arrays, as the book's np.zeros(D) are.
#
# Twins: fastnn.reference.normalization.Dropout / BatchNormalization (forward, backward).
cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport uint8_t
from numpy.random cimport bitgen_t

import numpy as np

from fastnn._kernels._arrays cimport data_2d, flat_data, float_type
from fastnn._kernels._cnormalization cimport *
from fastnn._kernels._cfnn cimport FNN_IDENTITY

cnp.import_array()

BN_EPS = FNN_BN_EPS


cdef cnp.npy_intp _size(object a, str name) except -1:
    if not cnp.PyArray_Check(a):
        raise TypeError(f"{name}: expected a numpy.ndarray, got {type(a).__name__}")
    return cnp.PyArray_SIZE(<cnp.ndarray> a)


cdef bitgen_t *_bitgen(object bit_generator) except NULL:
    try:
        capsule = bit_generator.capsule
    except AttributeError:
        raise TypeError(f"bit_generator: expected a numpy.random.BitGenerator, got "
                        f"{type(bit_generator).__name__}") from None
    return <bitgen_t *> PyCapsule_GetPointer(capsule, "BitGenerator")


cdef void _fill_mask(bitgen_t *bg, bint mt19937, uint8_t *mask, cnp.npy_intp size,
                     double ratio) noexcept nogil:
    if mt19937:
        fnn_dropout_mask_mt19937(mask, size, ratio, <fnn_mt19937_state *> bg.state)
    else:
        fnn_dropout_mask(mask, size, ratio, bg.next_double, bg.state)


def _mt19937_layout_ok():
    """Whether fnn_mt19937_state is NumPy's MT19937 state: its words and position read
    through the struct equal those of ``.state``, and masks drawn through it equal those
    drawn through NumPy's next_double, past several regenerations of the words."""
    cdef bitgen_t *bg
    cdef fnn_mt19937_state *st
    cdef cnp.ndarray fast = np.empty(3001, np.uint8), slow = np.empty(3001, np.uint8)
    a, b = np.random.MT19937(20261201), np.random.MT19937(20261201)
    a.random_raw(5)
    b.random_raw(5)
    bg = _bitgen(a)
    st = <fnn_mt19937_state *> bg.state
    state = a.state["state"]
    if st.pos != state["pos"] or any(st.key[i] != state["key"][i] for i in range(624)):
        return False
    for ratio in (0.5, 0.2, 0.9):
        _fill_mask(bg, True, <uint8_t *> cnp.PyArray_DATA(fast), 3001, ratio)
        _fill_mask(_bitgen(b), False, <uint8_t *> cnp.PyArray_DATA(slow), 3001, ratio)
        if not np.array_equal(fast, slow):
            return False
    return a.random_raw() == b.random_raw()


_MT19937_OK = _mt19937_layout_ok()


def dropout_mask(bit_generator,  # IN/OUT a numpy.random.BitGenerator, advanced
                 mask_out,       # OUT bool array, any shape: (u > ratio) for u drawn in order
                 double ratio):
    """``mask_out[...] = bit_generator's next doubles > ratio``, in C order, as
    ``np.random.rand(*mask_out.shape) > ratio`` (or ``Generator.random``) would draw them."""
    cdef cnp.npy_intp size = _size(mask_out, "mask_out")
    cdef uint8_t *m = <uint8_t *> flat_data(mask_out, "mask_out", cnp.NPY_BOOL, size, True)
    cdef bitgen_t *bg = _bitgen(bit_generator)
    cdef bint mt19937 = _MT19937_OK and type(bit_generator) is np.random.MT19937
    with bit_generator.lock:
        with nogil:
            _fill_mask(bg, mt19937, m, size, ratio)


def dropout_masks(bit_generator, list masks_out, double ratio):
    """``dropout_mask`` for each array of ``masks_out`` in turn, under one hold of the lock."""
    cdef bitgen_t *bg = _bitgen(bit_generator)
    cdef bint mt19937 = _MT19937_OK and type(bit_generator) is np.random.MT19937
    cdef cnp.npy_intp size
    cdef uint8_t *m
    for i, mask in enumerate(masks_out):
        size = _size(mask, f"masks_out[{i}]")
        flat_data(mask, f"masks_out[{i}]", cnp.NPY_BOOL, size, True)
    with bit_generator.lock:
        for mask in masks_out:
            size = cnp.PyArray_SIZE(<cnp.ndarray> mask)
            m = <uint8_t *> cnp.PyArray_DATA(<cnp.ndarray> mask)
            with nogil:
                _fill_mask(bg, mt19937, m, size, ratio)


def mask_multiply(x,     # IN  any shape
                  mask,  # IN  bool, x's size
                  out):  # OUT x's dtype and size; may be x
    """out = x * mask (the book's Dropout: forward in training, and backward)."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp size = _size(x, "x")
    cdef const void *xp = flat_data(x, "x", typenum, size)
    cdef const uint8_t *mp = <const uint8_t *> flat_data(mask, "mask", cnp.NPY_BOOL, size)
    cdef void *op = flat_data(out, "out", typenum, size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_mask_multiply_f32(<const float *> xp, mp, <float *> op, size)
        else:
            fnn_mask_multiply_f64(<const double *> xp, mp, <double *> op, size)


def scale(x,              # IN  any shape
          double factor,
          out):           # OUT x's dtype and size
    """out = x * factor, the factor rounded to x's dtype (as NumPy does for a Python float)."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp size = _size(x, "x")
    cdef const void *xp = flat_data(x, "x", typenum, size)
    cdef void *op = flat_data(out, "out", typenum, size, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_scale_f32(<const float *> xp, <float> factor, <float *> op, size)
        else:
            fnn_scale_f64(<const double *> xp, factor, <double *> op, size)


def batchnorm_forward_train(x,                  # IN  (n, d), n >= 1
                            gamma, beta,        # IN  (d,) of x's dtype
                            double momentum,
                            running_mean_out,   # IN/OUT (d,) float64, updated in place
                            running_var_out,    # IN/OUT (d,) float64, updated in place
                            mean_out,           # OUT (d,) float64: the batch's mean
                            inv_std_out,        # OUT (d,) float64: 1 / sqrt(var + eps)
                            std_out,            # OUT (d,) of x's dtype: sqrt(var + eps)
                            xn_out,             # OUT (n, d): (x - mean) / std
                            out):               # OUT (n, d): gamma xn + beta
    """The book's BatchNormalization forward in training mode, on a 2-D batch."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = x.shape[0] if cnp.PyArray_NDIM(<cnp.ndarray> x) == 2 else -1
    cdef cnp.npy_intp d = x.shape[1] if n >= 0 else -1
    cdef const void *xp = data_2d(x, "x", typenum, n, d)
    cdef const void *gp = flat_data(gamma, "gamma", typenum, d)
    cdef const void *bp = flat_data(beta, "beta", typenum, d)
    cdef double *rm = <double *> flat_data(running_mean_out, "running_mean_out", cnp.NPY_FLOAT64, d, True)
    cdef double *rv = <double *> flat_data(running_var_out, "running_var_out", cnp.NPY_FLOAT64, d, True)
    cdef double *mp = <double *> flat_data(mean_out, "mean_out", cnp.NPY_FLOAT64, d, True)
    cdef double *ip = <double *> flat_data(inv_std_out, "inv_std_out", cnp.NPY_FLOAT64, d, True)
    cdef void *sp = flat_data(std_out, "std_out", typenum, d, True)
    cdef void *xnp = data_2d(xn_out, "xn_out", typenum, n, d, True)
    cdef void *op = data_2d(out, "out", typenum, n, d, True)
    if n == 0:
        raise ValueError("x: an empty batch has no mean or variance")
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_batchnorm_forward_train_f32(
                <const float *> xp, NULL, <const float *> gp, <const float *> bp, n, d,
                FNN_BN_EPS, momentum, rm, rv, mp, ip, <float *> sp, <float *> xnp,
                <float *> op, FNN_IDENTITY, NULL)
        else:
            fnn_batchnorm_forward_train_f64(
                <const double *> xp, NULL, <const double *> gp, <const double *> bp, n, d,
                FNN_BN_EPS, momentum, rm, rv, mp, ip, <double *> sp, <double *> xnp,
                <double *> op, FNN_IDENTITY, NULL)


def batchnorm_forward_test(x,              # IN  (n, d)
                           gamma, beta,    # IN  (d,) of x's dtype
                           running_mean,   # IN  (d,) float64
                           running_var,    # IN  (d,) float64
                           inv_std_out,    # OUT (d,) float64 workspace
                           out):           # OUT (n, d)
    """The book's BatchNormalization forward in test mode (the running statistics)."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = x.shape[0] if cnp.PyArray_NDIM(<cnp.ndarray> x) == 2 else -1
    cdef cnp.npy_intp d = x.shape[1] if n >= 0 else -1
    cdef const void *xp = data_2d(x, "x", typenum, n, d)
    cdef const void *gp = flat_data(gamma, "gamma", typenum, d)
    cdef const void *bp = flat_data(beta, "beta", typenum, d)
    cdef const double *rm = <const double *> flat_data(running_mean, "running_mean", cnp.NPY_FLOAT64, d)
    cdef const double *rv = <const double *> flat_data(running_var, "running_var", cnp.NPY_FLOAT64, d)
    cdef double *ip = <double *> flat_data(inv_std_out, "inv_std_out", cnp.NPY_FLOAT64, d, True)
    cdef void *op = data_2d(out, "out", typenum, n, d, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_batchnorm_forward_test_f32(<const float *> xp, NULL, <const float *> gp,
                                           <const float *> bp, n, d, FNN_BN_EPS, rm, rv, ip,
                                           <float *> op, FNN_IDENTITY, 1)
        else:
            fnn_batchnorm_forward_test_f64(<const double *> xp, NULL, <const double *> gp,
                                           <const double *> bp, n, d, FNN_BN_EPS, rm, rv, ip,
                                           <double *> op, FNN_IDENTITY, 1)


def batchnorm_backward(dout,          # IN  (n, d)
                       xn,            # IN  (n, d): the forward's normalised batch
                       gamma,         # IN  (d,)
                       inv_std,       # IN  (d,) float64: the forward's 1 / std
                       dx_out,        # OUT (n, d)
                       dgamma_out,    # OUT (d,)
                       dbeta_out,     # OUT (d,)
                       work):         # OUT (2 d,) float64 workspace
    """The book's BatchNormalization backward: dx, dgamma, dbeta in two passes."""
    cdef int typenum = float_type(dout, "dout")
    cdef cnp.npy_intp n = dout.shape[0] if cnp.PyArray_NDIM(<cnp.ndarray> dout) == 2 else -1
    cdef cnp.npy_intp d = dout.shape[1] if n >= 0 else -1
    cdef const void *dp = data_2d(dout, "dout", typenum, n, d)
    cdef const void *xnp = data_2d(xn, "xn", typenum, n, d)
    cdef const void *gp = flat_data(gamma, "gamma", typenum, d)
    cdef const double *ip = <const double *> flat_data(inv_std, "inv_std", cnp.NPY_FLOAT64, d)
    cdef void *dxp = data_2d(dx_out, "dx_out", typenum, n, d, True)
    cdef void *dgp = flat_data(dgamma_out, "dgamma_out", typenum, d, True)
    cdef void *dbp = flat_data(dbeta_out, "dbeta_out", typenum, d, True)
    cdef double *wp = <double *> flat_data(work, "work", cnp.NPY_FLOAT64, 2 * d, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_batchnorm_backward_f32(<const float *> dp, <const float *> xnp,
                                       <const float *> gp, ip, n, d, <float *> dxp,
                                       <float *> dgp, <float *> dbp, wp, FNN_IDENTITY, NULL,
                                       NULL)
        else:
            fnn_batchnorm_backward_f64(<const double *> dp, <const double *> xnp,
                                       <const double *> gp, ip, n, d, <double *> dxp,
                                       <double *> dgp, <double *> dbp, wp, FNN_IDENTITY, NULL,
                                       NULL)
