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
# so a training step allocates nothing.  Every array's dtype, layout and dimensions are checked
# against the sizes the weights give (fastnn/_kernels/_arrays.pxd) before the GIL is released,
# so the nogil code walks only what it was given.  Per layer, forward is one GEMM and one C pass (bias
# and activation fused); the loss layer is one C pass that leaves (softmax - t) / n in place
# of the logits; backward is a GEMM for dW, a column sum for db, and for all but the first
# layer a GEMM for the input's delta fused with the activation's derivative.  The first
# layer's input gradient, which nobody uses, is never computed.
#
# With precision="bf16" (float32 only) the caller adds a _bf16.Operands: every GEMM then goes
# through _bf16's door, its operands rounded once each: the weights at the start of the call
# (when round_weights: predict's later blocks reuse them), each layer's input before its
# forward GEMM (kept for the weight gradient), each delta before its two backward GEMMs.  The
# bias, activation, loss, column sums and weight decay read the float32 values as before.
#
# The caller may add a _sparse.Buffers: the first layer's forward GEMM and weight gradient
# then run over the batch's nonzeros where it is sparse enough (_sparse.pyx says when); in
# bf16, over the rounded operands' (on the portable path, whose operands are float32 values).
#
# Twins: fastnn.reference.nets.TwoLayerNet / MultiLayerNet (predict, loss, gradient).
cimport numpy as cnp
from cython cimport floating
from libc.math cimport isnan
from libc.stdint cimport int64_t
from libc.stdlib cimport free, malloc

from fastnn._kernels._arrays cimport data_2d, dim, flat_data, float_type
from fastnn._kernels cimport _bf16
from fastnn._kernels._bf16 cimport Bf16Ops, Operands
from fastnn._kernels._blas cimport gemm
from fastnn._kernels cimport _sparse
from fastnn._kernels._sparse cimport SparseOps
from fastnn._kernels._cfnn cimport *

cnp.import_array()

# the hidden activations of the C kernels (src_c/fnn_kernels.h: enum fnn_activation)
ACTIVATION_CODES = {"identity": FNN_IDENTITY, "relu": FNN_RELU, "sigmoid": FNN_SIGMOID}


cdef class _Sizes:
    cdef int *s
    cdef int L

    def __cinit__(self, list Ws):
        self.L = len(Ws)
        if self.L == 0:
            raise ValueError("Ws: a network needs at least one layer")
        self.s = <int *> malloc((self.L + 1) * sizeof(int))
        if self.s == NULL:
            raise MemoryError()
        self.s[0] = dim(Ws[0], "Ws[0]", 2, 0)
        for l in range(self.L):
            self.s[l + 1] = dim(Ws[l], f"Ws[{l}]", 2, 1)

    def __dealloc__(self):
        free(self.s)


cdef class _Pointers:
    """Data pointers of a list of arrays, one per layer, each checked to be of shape
    ``(rows or sizes[l], sizes[l + 1])`` (``rows`` < 0: a weight, ``(sizes[l], sizes[l+1])``;
    ``rows`` = 0: a bias, ``(sizes[l + 1],)``), gathered once per call for the nogil code."""
    cdef void **p
    cdef Py_ssize_t size

    def __cinit__(self, list arrays, str name, int typenum, _Sizes sz, cnp.npy_intp rows,
                  bint out):
        self.size = len(arrays)
        if self.size != sz.L:
            raise ValueError(f"{name}: expected {sz.L} arrays, one per layer, got {self.size}")
        self.p = <void **> malloc(max(self.size, 1) * sizeof(void *))
        if self.p == NULL:
            raise MemoryError()
        for l in range(self.size):
            what = f"{name}[{l}]"
            if rows < 0:
                self.p[l] = data_2d(arrays[l], what, typenum, sz.s[l], sz.s[l + 1], out)
            elif rows == 0:
                self.p[l] = flat_data(arrays[l], what, typenum, sz.s[l + 1], out)
            else:
                self.p[l] = data_2d(arrays[l], what, typenum, rows, sz.s[l + 1], out)

    def __dealloc__(self):
        free(self.p)


cdef inline void _bias_activation(floating *z, const floating *b, Py_ssize_t n, Py_ssize_t k,
                                  int activation) noexcept nogil:
    if floating is float:
        fnn_bias_activation_f32(z, b, n, k, activation)
    else:
        fnn_bias_activation_f64(z, b, n, k, activation)


cdef void _forward(int L, const int *sizes, int n, const floating *x, floating **W,
                   floating **b, floating **a, int activation, Bf16Ops *bf,
                   SparseOps *sp) noexcept nogil:
    cdef const floating *inp = x
    cdef int l
    if floating is float:
        if bf != NULL:
            _bf16.round_weights(bf, W)
    for l in range(L):
        if floating is float and bf != NULL:
            _bf16.round_operand(inp, n * <Py_ssize_t> sizes[l], bf.inp[l])
            # the sparse product of the rounded operands (float32 storage where sp is given)
            # is the bf16 GEMM's: bf16 products are exact in float32, summed in float32
            if not (l == 0 and sp != NULL and _sparse.forward(sp, bf.inp[0], n, sizes[0],
                                                              sizes[1], bf.W[0], a[0])):
                _bf16.gemm(False, False, n, sizes[l + 1], sizes[l], 1, bf.inp[l], sizes[l],
                           bf.W[l], sizes[l + 1], 0, a[l], sizes[l + 1])
        elif l == 0 and sp != NULL and _sparse.forward(sp, x, n, sizes[0], sizes[1], W[0],
                                                       a[0]):
            pass
        else:
            if l == 0:
                inp = <const floating *> _sparse.dense_input(sp, x, n * <Py_ssize_t> sizes[0])
            gemm(False, False, n, sizes[l + 1], sizes[l], 1, inp, sizes[l], W[l], sizes[l + 1],
                 0, a[l], sizes[l + 1])
        _bias_activation(a[l], b[l], n, sizes[l + 1],
                         activation if l < L - 1 else FNN_IDENTITY)
        inp = a[l]


cdef void _backward(int L, const int *sizes, int n, const floating *x, floating **W,
                    floating **a, floating **dW, floating **db, floating *s0, floating *s1,
                    int activation, floating decay, Bf16Ops *bf, SparseOps *sp) noexcept nogil:
    # on entry a[L-1] holds d loss / d logits
    cdef floating *delta = a[L - 1]
    cdef floating *nxt
    cdef const floating *inp
    cdef int l
    for l in range(L - 1, -1, -1):
        if floating is float and bf != NULL:
            # the layer's input was rounded by the forward pass; the delta is, once, here
            _bf16.round_operand(delta, n * <Py_ssize_t> sizes[l + 1], bf.delta)
            if not (l == 0 and sp != NULL and _sparse.weight_gradient(sp, n, sizes[0],
                                                                      sizes[1], bf.delta,
                                                                      dW[0])):
                _bf16.gemm(True, False, sizes[l], sizes[l + 1], n, 1, bf.inp[l], sizes[l],
                           bf.delta, sizes[l + 1], 0, dW[l], sizes[l + 1])
        elif l == 0 and sp != NULL and _sparse.weight_gradient(sp, n, sizes[0], sizes[1], delta,
                                                               dW[0]):
            pass
        else:
            inp = a[l - 1] if l else <const floating *> _sparse.dense_input(
                sp, x, n * <Py_ssize_t> sizes[0])
            gemm(True, False, sizes[l], sizes[l + 1], n, 1, inp, sizes[l], delta, sizes[l + 1],
                 0, dW[l], sizes[l + 1])
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
        if floating is float:
            if bf != NULL:
                _bf16.gemm(False, True, n, sizes[l], sizes[l + 1], 1, bf.delta, sizes[l + 1],
                           bf.W[l], sizes[l + 1], 0, nxt, sizes[l])
            else:
                gemm(False, True, n, sizes[l], sizes[l + 1], 1, delta, sizes[l + 1], W[l],
                     sizes[l + 1], 0, nxt, sizes[l])
        else:
            gemm(False, True, n, sizes[l], sizes[l + 1], 1, delta, sizes[l + 1], W[l],
                 sizes[l + 1], 0, nxt, sizes[l])
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


def forward(list Ws,      # IN  L weights (sizes[l], sizes[l+1])
            list bs,      # IN  L biases
            x,            # IN  (n, sizes[0])
            list a_out,   # OUT L layer outputs (n, sizes[l+1]); the last gets the logits
            int activation,
            bf16=None,    # OUT _bf16.Operands (precision="bf16", float32), or None
            sparse=None): # OUT _sparse.Buffers (the first layer on a sparse x), or None
    """Logits of the network for the rows of ``x``, into ``a_out[-1]``."""
    cdef int xtype = float_type(x, "x"), typenum = _pass_type(xtype, Ws, sparse)
    cdef _Sizes sz = _Sizes(Ws)
    cdef int n = dim(x, "x", 2, 0)
    cdef const void *xp = data_2d(x, "x", xtype, n, sz.s[0])
    cdef _Pointers W = _Pointers(Ws, "Ws", typenum, sz, -1, False)
    cdef _Pointers b = _Pointers(bs, "bs", typenum, sz, 0, False)
    cdef _Pointers a = _Pointers(a_out, "a_out", typenum, sz, n, True)
    cdef Bf16Ops *bf = _operands(bf16, typenum, sz, n, False)
    cdef SparseOps *sp = _sparse_ops(sparse, bf, typenum, sz, n, False, xtype, &xp)
    if n == 0:
        return
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _forward[float](sz.L, sz.s, n, <float *> xp, <float **> W.p, <float **> b.p,
                            <float **> a.p, activation, bf, sp)
        else:
            _forward[double](sz.L, sz.s, n, <double *> xp, <double **> W.p, <double **> b.p,
                             <double **> a.p, activation, NULL, sp)


cdef Bf16Ops *_operands(object bf16, int typenum, _Sizes sz, int n, bint backward) except? NULL:
    """The checked operand buffers of a bf16 pass, or NULL for the dtype's own precision."""
    if bf16 is None:
        return NULL
    if not isinstance(bf16, Operands):
        raise TypeError(f"bf16: expected a _bf16.Operands or None, got {type(bf16).__name__}")
    if typenum != cnp.NPY_FLOAT32:
        raise TypeError("bf16: bfloat16 operands need a float32 network")
    (<Operands> bf16).check(sz.L, sz.s, n, backward)
    return &(<Operands> bf16).ops


cdef int _pass_type(int xtype, list Ws, object sparse):
    """The dtype a pass computes in: x's, but float64 for a float32 x given float64 weights
    and the sparse buffers, which widen x themselves (a float64 copy only where a dense GEMM
    needs it)."""
    if (xtype == cnp.NPY_FLOAT32 and sparse is not None and Ws and cnp.PyArray_Check(Ws[0])
            and cnp.PyArray_TYPE(<cnp.ndarray> Ws[0]) == cnp.NPY_FLOAT64):
        return cnp.NPY_FLOAT64
    return xtype


cdef SparseOps *_sparse_ops(object sparse, Bf16Ops *bf, int typenum, _Sizes sz, int n,
                            bint backward, int xtype, const void **xp) except? NULL:
    """The checked buffers of the sparse first layer, or NULL (_sparse.buffers_for).  A
    widening pass hands the batch to the buffers and leaves ``*xp`` NULL: the passes read it
    through _sparse."""
    if xtype == typenum:
        return _sparse.buffers_for(sparse, typenum, n, sz.s[0], backward, bf != NULL)
    cdef SparseOps *sp = _sparse.buffers_for(sparse, typenum, n, sz.s[0], backward, False,
                                             <const float *> xp[0])
    xp[0] = NULL
    return sp


def loss(list Ws, list bs, x, t, bint labels, list a_out, row_loss_out, int activation,
         bint exact, bf16=None, sparse=None):
    """Mean loss (without weight decay) of the network on one batch; the gradient of the
    logits is left in ``a_out[-1]`` as a by-product of the fused loss pass."""
    return _run(Ws, bs, x, t, labels, a_out, None, None, None, None, row_loss_out, activation,
                exact, 0, bf16, sparse)


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
             int activation, bint exact, double weight_decay_lambda,
             bf16=None,          # OUT _bf16.Operands (precision="bf16", float32), or None
             sparse=None):       # OUT _sparse.Buffers (the first layer on a sparse x), or None
    """Loss (without weight decay) and gradients of the network on one batch."""
    return _run(Ws, bs, x, t, labels, a_out, dW_out, db_out, s0, s1, row_loss_out, activation,
                exact, weight_decay_lambda, bf16, sparse)


cdef double _run(list Ws, list bs, x, t, bint labels, list a_out, list dW_out, list db_out,
                 s0, s1, row_loss_out, int activation, bint exact, double decay, bf16,
                 sparse):
    """Forward and loss, then backward unless ``dW_out`` is None."""
    cdef int xtype = float_type(x, "x"), typenum = _pass_type(xtype, Ws, sparse)
    cdef _Sizes sz = _Sizes(Ws)
    cdef int n = dim(x, "x", 2, 0), L = sz.L, widest = 0, l
    cdef const void *xp = data_2d(x, "x", xtype, n, sz.s[0])
    cdef const void *tp
    if labels:
        dim(t, "t", 1, 0)
        tp = flat_data(t, "t", cnp.NPY_INT64, n)
    else:
        tp = data_2d(t, "t", typenum, n, sz.s[L])
    cdef _Pointers W = _Pointers(Ws, "Ws", typenum, sz, -1, False)
    cdef _Pointers b = _Pointers(bs, "bs", typenum, sz, 0, False)
    cdef _Pointers a = _Pointers(a_out, "a_out", typenum, sz, n, True)
    cdef bint backward = dW_out is not None
    cdef _Pointers dW = _Pointers(dW_out, "dW_out", typenum, sz, -1, True) if backward else None
    cdef _Pointers db = _Pointers(db_out, "db_out", typenum, sz, 0, True) if backward else None
    cdef void *s0p = NULL
    cdef void *s1p = NULL
    if backward:
        for l in range(1, L):
            widest = max(widest, sz.s[l])
        # the deltas of the hidden layers, ping-ponged: at least n x the widest of them
        if dim(s0, "s0", 2, 0) < n or dim(s0, "s0", 2, 1) < widest:
            raise ValueError(f"s0: expected at least ({n}, {widest}), got {s0.shape}")
        if dim(s1, "s1", 2, 0) < n or dim(s1, "s1", 2, 1) < widest:
            raise ValueError(f"s1: expected at least ({n}, {widest}), got {s1.shape}")
        s0p = data_2d(s0, "s0", typenum, s0.shape[0], s0.shape[1], True)
        s1p = data_2d(s1, "s1", typenum, s1.shape[0], s1.shape[1], True)
    cdef double *rl = <double *> flat_data(row_loss_out, "row_loss_out", cnp.NPY_FLOAT64, n, True)
    cdef Bf16Ops *bf = _operands(bf16, typenum, sz, n, backward)
    cdef SparseOps *sp = _sparse_ops(sparse, bf, typenum, sz, n, backward, xtype, &xp)
    cdef double result
    if n == 0:
        raise ValueError("x: an empty batch has no mean loss")
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            _forward[float](L, sz.s, n, <float *> xp, <float **> W.p, <float **> b.p,
                            <float **> a.p, activation, bf, sp)
            result = _loss_grad[float](<float *> a.p[L - 1], tp, labels, rl, n, sz.s[L], exact)
            if backward:
                _backward[float](L, sz.s, n, <float *> xp, <float **> W.p, <float **> a.p,
                                 <float **> dW.p, <float **> db.p, <float *> s0p,
                                 <float *> s1p, activation, <float> decay, bf, sp)
        else:
            _forward[double](L, sz.s, n, <double *> xp, <double **> W.p, <double **> b.p,
                             <double **> a.p, activation, NULL, sp)
            result = _loss_grad[double](<double *> a.p[L - 1], tp, labels, rl, n, sz.s[L],
                                        exact)
            if backward:
                _backward[double](L, sz.s, n, <double *> xp, <double **> W.p, <double **> a.p,
                                  <double **> dW.p, <double **> db.p, <double *> s0p,
                                  <double *> s1p, activation, decay, NULL, sp)
    return result


def overlapping(tuple inputs, list outputs):
    """Whether the memory of any array of ``inputs`` overlaps that of any of ``outputs`` (byte
    ranges, as np.may_share_memory, at a tenth of its cost per pair)."""
    cdef char *a
    cdef char *b
    cdef cnp.npy_intp na, nb
    for x in inputs:
        a, na = cnp.PyArray_BYTES(<cnp.ndarray> x), cnp.PyArray_NBYTES(<cnp.ndarray> x)
        for y in outputs:
            b, nb = cnp.PyArray_BYTES(<cnp.ndarray> y), cnp.PyArray_NBYTES(<cnp.ndarray> y)
            if na and nb and a < b + nb and b < a + na:
                return True
    return False


def count_argmax_hits(scores,   # IN  (n, k)
                      labels):  # IN  (n,) int64
    """How many rows have their (first) largest score at their label; NaN counts as largest,
    as in np.argmax."""
    cdef int typenum = float_type(scores, "scores")
    cdef cnp.npy_intp n = dim(scores, "scores", 2, 0), k = dim(scores, "scores", 2, 1)
    cdef const void *sp = data_2d(scores, "scores", typenum, n, k)
    cdef const int64_t *lp = <const int64_t *> flat_data(labels, "labels", cnp.NPY_INT64, n)
    cdef Py_ssize_t hits = 0
    if n == 0 or k == 0:
        return 0
    with nogil:
        if typenum == cnp.NPY_FLOAT32:
            hits = _argmax_hits[float](<const float *> sp, lp, n, k)
        else:
            hits = _argmax_hits[double](<const double *> sp, lp, n, k)
    return hits


cdef Py_ssize_t _argmax_hits(const floating *scores, const int64_t *labels, Py_ssize_t n,
                             Py_ssize_t k) noexcept nogil:
    cdef Py_ssize_t i, j, best, hits = 0
    cdef const floating *row
    for i in range(n):
        row = scores + i * k
        best = 0
        if not isnan(row[0]):
            for j in range(1, k):
                if isnan(row[j]):
                    best = j
                    break
                if row[j] > row[best]:
                    best = j
        hits += best == labels[i]
    return hits
