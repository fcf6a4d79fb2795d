# Design: a whole network's forward pass, or its loss and gradient, in one call without the GIL.
#
# The network is a stack of L dense layers, W[l] of shape (sizes[l], sizes[l+1]) as in the
# book's Affine, with one hidden activation after every layer but the last and
# softmax-with-loss at the end.  fastnn/nets.py validates the arrays and owns the workspace:
#
#   a[l]      (n, sizes[l+1])  layer outputs; a[L-1] holds the logits, then their gradient
#   dW[l], db[l]               the gradients, returned to the caller as arrays
#   s0, s1    (n, max width)   ping-pong buffers for the hidden layers' deltas
#
# so a training step allocates nothing.  Per layer, forward is one GEMM and one C pass (bias
# and activation fused); the loss layer is one C pass that leaves (softmax - t) / n in place
# of the logits; backward is a GEMM for dW, a column sum for db, and for all but the first
# layer a GEMM for the input's delta fused with the activation's derivative.  The first
# layer's input gradient, which nobody uses, is never computed.
#
# Twins: fastnn.reference.nets.TwoLayerNet / MultiLayerNet (predict, loss, gradient).
cimport numpy as cnp
from cython cimport floating
from libc.math cimport isnan
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *

cnp.import_array()

# the hidden activations of the C kernels (src_c/fnn_kernels.h: enum fnn_activation)
ACTIVATION_CODES = {"identity": FNN_IDENTITY, "relu": FNN_RELU, "sigmoid": FNN_SIGMOID}


cdef inline void *_data(object a):
    return cnp.PyArray_DATA(<cnp.ndarray> a)


cdef class _Pointers:
    """Data pointers of a list of arrays, gathered once per call for the nogil code."""
    cdef void **p
    cdef Py_ssize_t size

    def __cinit__(self, list arrays):
        self.size = len(arrays)
        self.p = <void **> malloc(max(self.size, 1) * sizeof(void *))
        if self.p == NULL:
            raise MemoryError()
        for i in range(self.size):
            self.p[i] = _data(arrays[i])

    def __dealloc__(self):
        free(self.p)


cdef inline void _bias_activation(floating *z, const floating *b, Py_ssize_t n, Py_ssize_t k,
                                  int activation) noexcept nogil:
    if floating is float:
        fnn_bias_activation_f32(z, b, n, k, activation)
    else:
        fnn_bias_activation_f64(z, b, n, k, activation)


cdef void _forward(int L, const int *sizes, int n, const floating *x, floating **W,
                   floating **b, floating **a, int activation) noexcept nogil:
    cdef const floating *inp = x
    cdef int l
    for l in range(L):
        gemm(False, False, n, sizes[l + 1], sizes[l], 1, inp, sizes[l], W[l], sizes[l + 1],
             0, a[l], sizes[l + 1])
        _bias_activation(a[l], b[l], n, sizes[l + 1],
                         activation if l < L - 1 else FNN_IDENTITY)
        inp = a[l]


cdef void _backward(int L, const int *sizes, int n, const floating *x, floating **W,
                    floating **a, floating **dW, floating **db, floating *s0, floating *s1,
                    int activation, floating decay) noexcept nogil:
    # on entry a[L-1] holds d loss / d logits
    cdef floating *delta = a[L - 1]
    cdef floating *nxt
    cdef int l
    for l in range(L - 1, -1, -1):
        gemm(True, False, sizes[l], sizes[l + 1], n, 1, x if l == 0 else a[l - 1], sizes[l],
             delta, sizes[l + 1], 0, dW[l], sizes[l + 1])
        if floating is float:
            fnn_column_sum_f32(delta, db[l], n, sizes[l + 1])
            if decay != 0:
                fnn_add_scaled_f32(dW[l], W[l], decay, sizes[l] * <Py_ssize_t> sizes[l + 1])
        else:
            fnn_column_sum_f64(delta, db[l], n, sizes[l + 1])
            if decay != 0:
                fnn_add_scaled_f64(dW[l], W[l], decay, sizes[l] * <Py_ssize_t> sizes[l + 1])
        if l == 0:
            break
        nxt = s1 if delta == s0 else s0
        gemm(False, True, n, sizes[l], sizes[l + 1], 1, delta, sizes[l + 1], W[l], sizes[l + 1],
             0, nxt, sizes[l])
        if floating is float:
            fnn_activation_backward_f32(nxt, a[l - 1], n * <Py_ssize_t> sizes[l], activation)
        else:
            fnn_activation_backward_f64(nxt, a[l - 1], n * <Py_ssize_t> sizes[l], activation)
        delta = nxt


cdef double _loss_grad(floating *z, const void *t, bint labels, double *row_loss, int n, int k,
                       bint exact) noexcept nogil:
    if floating is float:
        if labels:
            fnn_softmax_xent_grad_labels_f32(z, <const int64_t *> t, z, row_loss, n, k, exact, 1)
        else:
            fnn_softmax_xent_grad_targets_f32(z, <const float *> t, z, row_loss, n, k, exact, 1)
    else:
        if labels:
            fnn_softmax_xent_grad_labels_f64(z, <const int64_t *> t, z, row_loss, n, k, exact, 1)
        else:
            fnn_softmax_xent_grad_targets_f64(z, <const double *> t, z, row_loss, n, k, exact, 1)
    return fnn_mean_row_loss(row_loss, n)


cdef class _Sizes:
    cdef int *s
    cdef int L

    def __cinit__(self, list Ws):
        self.L = len(Ws)
        self.s = <int *> malloc((self.L + 1) * sizeof(int))
        if self.s == NULL:
            raise MemoryError()
        self.s[0] = Ws[0].shape[0]
        for l in range(self.L):
            self.s[l + 1] = Ws[l].shape[1]

    def __dealloc__(self):
        free(self.s)


def forward(list Ws,      # IN  L weights (sizes[l], sizes[l+1])
            list bs,      # IN  L biases
            x,            # IN  (n, sizes[0])
            list a_out,   # OUT L layer outputs (n, sizes[l+1]); the last gets the logits
            int activation):
    """Logits of the network for the rows of ``x``, into ``a_out[-1]``."""
    cdef _Sizes sz = _Sizes(Ws)
    cdef _Pointers W = _Pointers(Ws), b = _Pointers(bs), a = _Pointers(a_out)
    cdef int n = x.shape[0]
    cdef void *xp = _data(x)
    if n == 0:
        return
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_FLOAT32:
            _forward[float](sz.L, sz.s, n, <float *> xp, <float **> W.p, <float **> b.p,
                            <float **> a.p, activation)
        else:
            _forward[double](sz.L, sz.s, n, <double *> xp, <double **> W.p, <double **> b.p,
                             <double **> a.p, activation)


def loss(list Ws, list bs, x, t, bint labels, list a_out, row_loss_out, int activation,
         bint exact):
    """Mean loss (without weight decay) of the network on one batch; the gradient of the
    logits is left in ``a_out[-1]`` as a by-product of the fused loss pass."""
    return _run(Ws, bs, x, t, labels, a_out, None, None, None, None, row_loss_out, activation,
                exact, 0)


def gradient(list Ws,            # IN  L weights
             list bs,            # IN  L biases
             x,                  # IN  (n, sizes[0]), n >= 1
             t,                  # IN  int64 labels (n,) or targets (n, sizes[L]) of x's dtype
             bint labels,
             list a_out,         # OUT L layer outputs (workspace)
             list dW_out,        # OUT L weight gradients
             list db_out,        # OUT L bias gradients
             s0, s1,             # OUT (n, max hidden width) workspace
             row_loss_out,       # OUT (n,) float64
             int activation, bint exact, double weight_decay_lambda):
    """Loss (without weight decay) and gradients of the network on one batch."""
    return _run(Ws, bs, x, t, labels, a_out, dW_out, db_out, s0, s1, row_loss_out, activation,
                exact, weight_decay_lambda)


cdef double _run(list Ws, list bs, x, t, bint labels, list a_out, list dW_out, list db_out,
                 s0, s1, row_loss_out, int activation, bint exact, double decay):
    """Forward and loss, then backward unless ``dW_out`` is None."""
    cdef _Sizes sz = _Sizes(Ws)
    cdef _Pointers W = _Pointers(Ws), b = _Pointers(bs), a = _Pointers(a_out)
    cdef bint backward = dW_out is not None
    cdef _Pointers dW = _Pointers(dW_out if backward else [])
    cdef _Pointers db = _Pointers(db_out if backward else [])
    cdef int n = x.shape[0], L = sz.L
    cdef void *tp = _data(t)
    cdef void *s0p = _data(s0) if backward else NULL
    cdef void *s1p = _data(s1) if backward else NULL
    cdef double *rl = <double *> _data(row_loss_out)
    cdef void *xp = _data(x)
    cdef double result
    with nogil:
        if cnp.PyArray_TYPE(<cnp.ndarray> x) == cnp.NPY_FLOAT32:
            _forward[float](L, sz.s, n, <float *> xp, <float **> W.p, <float **> b.p,
                            <float **> a.p, activation)
            result = _loss_grad[float](<float *> a.p[L - 1], tp, labels, rl, n, sz.s[L], exact)
            if backward:
                _backward[float](L, sz.s, n, <float *> xp, <float **> W.p, <float **> a.p,
                                 <float **> dW.p, <float **> db.p, <float *> s0p,
                                 <float *> s1p, activation, <float> decay)
        else:
            _forward[double](L, sz.s, n, <double *> xp, <double **> W.p, <double **> b.p,
                             <double **> a.p, activation)
            result = _loss_grad[double](<double *> a.p[L - 1], tp, labels, rl, n, sz.s[L],
                                        exact)
            if backward:
                _backward[double](L, sz.s, n, <double *> xp, <double **> W.p, <double **> a.p,
                                  <double **> dW.p, <double **> db.p, <double *> s0p,
                                  <double *> s1p, activation, decay)
    return result


def count_argmax_hits(const floating[:, ::1] scores,  # IN  (n, k)
                      const int64_t[::1] labels):      # IN  (n,)
    """How many rows have their (first) largest score at their label; NaN counts as largest,
    as in np.argmax."""
    cdef Py_ssize_t n = scores.shape[0], k = scores.shape[1], i, j, best
    cdef Py_ssize_t hits = 0
    with nogil:
        for i in range(n):
            best = 0
            if not isnan(scores[i, 0]):
                for j in range(1, k):
                    if isnan(scores[i, j]):
                        best = j
                        break
                    if scores[i, j] > scores[i, best]:
                        best = j
            hits += best == labels[i]
    return hits
