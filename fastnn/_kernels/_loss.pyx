# Design: softmax and the cross-entropy, fused into one pass over each row of logits.
#
# C kernels (src_c/fnn_kernels_impl.h) compute the row max, the exponentials into the output,
# their sum and the row's loss while the row is in cache; the per-row losses land in a buffer
# and are summed here afterwards, so the result does not depend on how rows are scheduled.
# Targets are either int64 labels (validated in range by the Python layer) or an array of
# the logits' shape and dtype.  ``exact`` selects the log-softmax loss instead of the book's
# -log(y + 1e-7).
#
# The arrays arrive as plain ndarrays: at the book's (100, 10) a pass takes about two
# microseconds, and typed memoryviews would add half of that.  The first array's dtype
# selects the code; fastnn/_kernels/_arrays.pxd checks that every other array matches it in
# dtype, layout and dimensions before a pointer is handed on.
#
# Twins: fastnn.reference.functions.softmax / cross_entropy_error / softmax_loss and
# fastnn.reference.layers.SoftmaxWithLoss.
cimport numpy as cnp
from libc.stdint cimport int64_t

from fastnn._kernels._arrays cimport data_2d, dim, flat_data, float_type
from fastnn._kernels._cfnn cimport *

cnp.import_array()


def first_bad_label(labels,    # IN  (n,) int64
                    int64_t k):
    """Index of the first label outside [0, k), or -1."""
    cdef cnp.npy_intp n = dim(labels, "labels", 1, 0)
    cdef const int64_t *lp = <const int64_t *> flat_data(labels, "labels", cnp.NPY_INT64, n)
    if n == 0:
        return -1
    return fnn_first_bad_label(lp, n, k)


def softmax_forward(x,        # IN  (n, k)
                    y_out):   # OUT (n, k)
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = dim(x, "x", 2, 0), k = dim(x, "x", 2, 1)
    cdef const void *xp = data_2d(x, "x", typenum, n, k)
    cdef void *yp = data_2d(y_out, "y_out", typenum, n, k, True)
    if n == 0 or k == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            fnn_softmax_f32(<const float *> xp, <float *> yp, n, k)
        else:
            fnn_softmax_f64(<const double *> xp, <double *> yp, n, k)


cdef const void *_targets(object t, bint labels, int typenum, cnp.npy_intp n,
                          cnp.npy_intp k) except NULL:
    if labels:
        dim(t, "labels", 1, 0)  # 1-D
        return flat_data(t, "labels", cnp.NPY_INT64, n)
    return data_2d(t, "t", typenum, n, k)


def softmax_xent_forward(x,              # IN  (n, k) logits
                         t,              # IN  int64 labels (n,) in [0, k), or targets (n, k)
                         bint labels,    #     which of the two t is
                         y_out,          # OUT (n, k) softmax(x)
                         row_loss_out,   # OUT (n,) float64
                         bint exact=False):
    """y = softmax(x) and the loss of every row; returns the mean loss over the n rows."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = dim(x, "x", 2, 0), k = dim(x, "x", 2, 1)
    cdef const void *xp = data_2d(x, "x", typenum, n, k)
    cdef const void *tp = _targets(t, labels, typenum, n, k)
    cdef void *yp = data_2d(y_out, "y_out", typenum, n, k, True)
    cdef double *rl = <double *> flat_data(row_loss_out, "row_loss_out", cnp.NPY_FLOAT64, n, True)
    cdef double mean
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if labels:
                fnn_softmax_xent_labels_f32(<const float *> xp, <const int64_t *> tp,
                                            <float *> yp, rl, n, k, exact)
            else:
                fnn_softmax_xent_targets_f32(<const float *> xp, <const float *> tp,
                                             <float *> yp, rl, n, k, exact)
        else:
            if labels:
                fnn_softmax_xent_labels_f64(<const double *> xp, <const int64_t *> tp,
                                            <double *> yp, rl, n, k, exact)
            else:
                fnn_softmax_xent_targets_f64(<const double *> xp, <const double *> tp,
                                             <double *> yp, rl, n, k, exact)
        mean = fnn_mean_row_loss(rl, n)
    return mean


def softmax_xent_grad(x,               # IN  (n, k) logits
                      t,               # IN  int64 labels (n,) in [0, k), or targets (n, k)
                      bint labels,     #     which of the two t is
                      dx_out,          # OUT (n, k) (softmax(x) - t) / n; may be x itself
                      row_loss_out,    # OUT (n,) float64
                      bint exact=False):
    """Forward and backward of softmax-with-loss in one pass; returns the mean loss."""
    cdef int typenum = float_type(x, "x")
    cdef cnp.npy_intp n = dim(x, "x", 2, 0), k = dim(x, "x", 2, 1)
    cdef const void *xp = data_2d(x, "x", typenum, n, k)
    cdef const void *tp = _targets(t, labels, typenum, n, k)
    cdef void *dp = data_2d(dx_out, "dx_out", typenum, n, k, True)
    cdef double *rl = <double *> flat_data(row_loss_out, "row_loss_out", cnp.NPY_FLOAT64, n, True)
    cdef double mean
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if labels:
                fnn_softmax_xent_grad_labels_f32(<const float *> xp, <const int64_t *> tp,
                                                 <float *> dp, rl, n, k, exact, 1)
            else:
                fnn_softmax_xent_grad_targets_f32(<const float *> xp, <const float *> tp,
                                                  <float *> dp, rl, n, k, exact, 1)
        else:
            if labels:
                fnn_softmax_xent_grad_labels_f64(<const double *> xp, <const int64_t *> tp,
                                                 <double *> dp, rl, n, k, exact, 1)
            else:
                fnn_softmax_xent_grad_targets_f64(<const double *> xp, <const double *> tp,
                                                  <double *> dp, rl, n, k, exact, 1)
        mean = fnn_mean_row_loss(rl, n)
    return mean


def softmax_xent_backward(y,              # IN  (n, k) forward softmax
                          t,              # IN  int64 labels (n,), or targets (n, k)
                          bint labels,    #     which of the two t is
                          dx_out,         # OUT (n, k)
                          double dout=1):
    """dx = (y - t) * dout / n, t given as labels or as targets of y's shape."""
    cdef int typenum = float_type(y, "y")
    cdef cnp.npy_intp n = dim(y, "y", 2, 0), k = dim(y, "y", 2, 1)
    cdef const void *yp = data_2d(y, "y", typenum, n, k)
    cdef const void *tp = _targets(t, labels, typenum, n, k)
    cdef void *dp = data_2d(dx_out, "dx_out", typenum, n, k, True)
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if labels:
                fnn_softmax_xent_backward_labels_f32(<const float *> yp, <const int64_t *> tp,
                                                     <float *> dp, n, k, <float> dout)
            else:
                fnn_softmax_xent_backward_targets_f32(<const float *> yp, <const float *> tp,
                                                      <float *> dp, n, k, <float> dout)
        else:
            if labels:
                fnn_softmax_xent_backward_labels_f64(<const double *> yp, <const int64_t *> tp,
                                                     <double *> dp, n, k, dout)
            else:
                fnn_softmax_xent_backward_targets_f64(<const double *> yp, <const double *> tp,
                                                      <double *> dp, n, k, dout)


def xent(y,              # IN  (n, k) probabilities
         t,              # IN  int64 labels (n,), or targets (n, k)
         bint labels,    #     which of the two t is
         row_loss_out):  # OUT (n,) float64
    """The book's cross_entropy_error: mean of -sum t log(y + 1e-7)."""
    cdef int typenum = float_type(y, "y")
    cdef cnp.npy_intp n = dim(y, "y", 2, 0), k = dim(y, "y", 2, 1)
    cdef const void *yp = data_2d(y, "y", typenum, n, k)
    cdef const void *tp = _targets(t, labels, typenum, n, k)
    cdef double *rl = <double *> flat_data(row_loss_out, "row_loss_out", cnp.NPY_FLOAT64, n, True)
    cdef double mean
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            if labels:
                fnn_xent_labels_f32(<const float *> yp, <const int64_t *> tp, rl, n, k)
            else:
                fnn_xent_targets_f32(<const float *> yp, <const float *> tp, rl, n, k)
        else:
            if labels:
                fnn_xent_labels_f64(<const double *> yp, <const int64_t *> tp, rl, n, k)
            else:
                fnn_xent_targets_f64(<const double *> yp, <const double *> tp, rl, n, k)
        mean = fnn_mean_row_loss(rl, n)
    return mean
