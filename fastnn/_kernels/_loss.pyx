# Design: softmax and the cross-entropy, fused into one pass over each row of logits.
#
# C kernels (src_c/fnn_kernels_impl.h) compute the row max, the exponentials into the output,
# their sum and the row's loss while the row is in cache; the per-row losses land in a buffer
# and are summed here afterwards, so the result does not depend on how rows are scheduled.
# Targets are either int64 labels (validated in range by the Python layer) or an array of
# the logits' shape and dtype.  ``exact`` selects the log-softmax loss instead of the book's
# -log(y + 1e-7).
#
# Twins: fastnn.reference.functions.softmax / cross_entropy_error / softmax_loss and
# fastnn.reference.layers.SoftmaxWithLoss.
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t

from fastnn._kernels._cfnn cimport *

cnp.import_array()


def first_bad_label(const int64_t[::1] labels, int64_t k):
    """Index of the first label outside [0, k), or -1."""
    if labels.shape[0] == 0:
        return -1
    return fnn_first_bad_label(&labels[0], labels.shape[0], k)


def softmax_forward(const floating[:, ::1] x,  # IN  (n, k)
                    floating[:, ::1] y_out):   # OUT (n, k)
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1]
    if n == 0 or k == 0:
        return
    with nogil:
        if floating is float:
            fnn_softmax_f32(&x[0, 0], &y_out[0, 0], n, k)
        else:
            fnn_softmax_f64(&x[0, 0], &y_out[0, 0], n, k)


def softmax_xent_labels_forward(const floating[:, ::1] x,     # IN  (n, k) logits
                                const int64_t[::1] labels,    # IN  (n,) in [0, k)
                                floating[:, ::1] y_out,       # OUT (n, k) softmax(x)
                                double[::1] row_loss_out,     # OUT (n,)
                                bint exact=False):
    """Returns the mean loss over the n rows."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1]
    cdef double mean
    with nogil:
        if floating is float:
            fnn_softmax_xent_labels_f32(&x[0, 0], &labels[0], &y_out[0, 0], &row_loss_out[0],
                                        n, k, exact)
        else:
            fnn_softmax_xent_labels_f64(&x[0, 0], &labels[0], &y_out[0, 0], &row_loss_out[0],
                                        n, k, exact)
        mean = fnn_mean_row_loss(&row_loss_out[0], n)
    return mean


def softmax_xent_targets_forward(const floating[:, ::1] x,  # IN  (n, k) logits
                                 const floating[:, ::1] t,  # IN  (n, k) targets (one-hot)
                                 floating[:, ::1] y_out,    # OUT (n, k) softmax(x)
                                 double[::1] row_loss_out,  # OUT (n,)
                                 bint exact=False):
    """Returns the mean loss over the n rows."""
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1]
    cdef double mean
    with nogil:
        if floating is float:
            fnn_softmax_xent_targets_f32(&x[0, 0], &t[0, 0], &y_out[0, 0], &row_loss_out[0],
                                         n, k, exact)
        else:
            fnn_softmax_xent_targets_f64(&x[0, 0], &t[0, 0], &y_out[0, 0], &row_loss_out[0],
                                         n, k, exact)
        mean = fnn_mean_row_loss(&row_loss_out[0], n)
    return mean


def softmax_xent_grad(x,               # IN  (n, k) logits
                      t,               # IN  int64 labels (n,) in [0, k), or targets (n, k)
                      bint labels,     #     which of the two t is
                      dx_out,          # OUT (n, k) (softmax(x) - t) / n
                      row_loss_out,    # OUT (n,) float64
                      bint exact=False):
    """Forward and backward of softmax-with-loss in one pass; returns the mean loss.

    The arrays arrive as plain ndarrays: at the book's (100, 10) the pass takes about two
    microseconds, and typed memoryviews would add half of that.  x's dtype selects the code;
    t (as targets) and dx_out have been made to match it.
    """
    cdef Py_ssize_t n = x.shape[0], k = x.shape[1]
    cdef void *xp = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef void *tp = cnp.PyArray_DATA(<cnp.ndarray> t)
    cdef void *dp = cnp.PyArray_DATA(<cnp.ndarray> dx_out)
    cdef double *rl = <double *> cnp.PyArray_DATA(<cnp.ndarray> row_loss_out)
    cdef double mean
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_FLOAT32:
            if labels:
                fnn_softmax_xent_grad_labels_f32(<float *> xp, <int64_t *> tp, <float *> dp, rl,
                                                 n, k, exact, 1)
            else:
                fnn_softmax_xent_grad_targets_f32(<float *> xp, <float *> tp, <float *> dp, rl,
                                                  n, k, exact, 1)
        else:
            if labels:
                fnn_softmax_xent_grad_labels_f64(<double *> xp, <int64_t *> tp, <double *> dp,
                                                 rl, n, k, exact, 1)
            else:
                fnn_softmax_xent_grad_targets_f64(<double *> xp, <double *> tp, <double *> dp,
                                                  rl, n, k, exact, 1)
        mean = fnn_mean_row_loss(rl, n)
    return mean


def softmax_xent_labels_backward(const floating[:, ::1] y,   # IN  (n, k) forward softmax
                                 const int64_t[::1] labels,  # IN  (n,)
                                 floating[:, ::1] dx_out,    # OUT (n, k)
                                 floating dout=1):
    """dx = (y - onehot(labels)) * dout / n."""
    cdef Py_ssize_t n = y.shape[0], k = y.shape[1]
    with nogil:
        if floating is float:
            fnn_softmax_xent_backward_labels_f32(&y[0, 0], &labels[0], &dx_out[0, 0], n, k, dout)
        else:
            fnn_softmax_xent_backward_labels_f64(&y[0, 0], &labels[0], &dx_out[0, 0], n, k, dout)


def softmax_xent_targets_backward(const floating[:, ::1] y,  # IN  (n, k) forward softmax
                                  const floating[:, ::1] t,  # IN  (n, k)
                                  floating[:, ::1] dx_out,   # OUT (n, k)
                                  floating dout=1):
    """dx = (y - t) * dout / n."""
    cdef Py_ssize_t n = y.shape[0], k = y.shape[1]
    with nogil:
        if floating is float:
            fnn_softmax_xent_backward_targets_f32(&y[0, 0], &t[0, 0], &dx_out[0, 0], n, k, dout)
        else:
            fnn_softmax_xent_backward_targets_f64(&y[0, 0], &t[0, 0], &dx_out[0, 0], n, k, dout)


def xent_labels(const floating[:, ::1] y,    # IN  (n, k) probabilities
                const int64_t[::1] labels,   # IN  (n,)
                double[::1] row_loss_out):   # OUT (n,)
    """The book's cross_entropy_error: mean of -log(y[label] + 1e-7)."""
    cdef Py_ssize_t n = y.shape[0], k = y.shape[1]
    cdef double mean
    with nogil:
        if floating is float:
            fnn_xent_labels_f32(&y[0, 0], &labels[0], &row_loss_out[0], n, k)
        else:
            fnn_xent_labels_f64(&y[0, 0], &labels[0], &row_loss_out[0], n, k)
        mean = fnn_mean_row_loss(&row_loss_out[0], n)
    return mean


def xent_targets(const floating[:, ::1] y,   # IN  (n, k) probabilities
                 const floating[:, ::1] t,   # IN  (n, k)
                 double[::1] row_loss_out):  # OUT (n,)
    """The book's cross_entropy_error: mean of -sum t log(y + 1e-7)."""
    cdef Py_ssize_t n = y.shape[0], k = y.shape[1]
    cdef double mean
    with nogil:
        if floating is float:
            fnn_xent_targets_f32(&y[0, 0], &t[0, 0], &row_loss_out[0], n, k)
        else:
            fnn_xent_targets_f64(&y[0, 0], &t[0, 0], &row_loss_out[0], n, k)
        mean = fnn_mean_row_loss(&row_loss_out[0], n)
    return mean
