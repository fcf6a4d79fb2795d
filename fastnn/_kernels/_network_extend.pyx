# Design: MultiLayerNetExtend's forward pass, loss and gradient in one call without the GIL.
#
# The network is _network.pyx's stack of L dense layers (W[l] of shape (sizes[l],
# sizes[l+1])), with, after every hidden layer's GEMM, the book's order of layers
#
#   Affine -> [BatchNorm] -> activation -> [Dropout]
#
# and softmax-with-loss at the end.  fastnn/nets.py validates the arrays, owns the workspace,
# and draws the dropout masks before the call (_normalization.dropout_masks, in the book's
# order: layer after layer), so that the nogil code walks only what it was given:
#
#   a[l]        (n, sizes[l+1])  layer outputs (after dropout); a[L-1] holds the logits,
#                                then their gradient
#   xn[l]       (n, sizes[l+1])  batch normalization's normalised input (BN only)
#   z           (n, widest)      the GEMM's output before batch normalization (BN only)
#   masks[l]    bool             the dropout masks (dropout in training only)
#   s0, s1      (n, widest)      ping-pong buffers for the hidden layers' deltas
#
# Per hidden layer, training forward is the GEMM and, with batch normalization, its two C
# passes, with the bias before it and the activation and the mask after it fused into the
# second (fnn_batchnorm_forward_train); without it, _network's bias-and-activation pass and
# a mask pass.  Backward per hidden layer is the GEMM of the delta through W, then, with
# batch normalization, its two passes, which apply the mask and the activation's derivative
# on the way (fnn_batchnorm_backward); without it, the activation's derivative alone, which
# is already 0 wherever the mask dropped a unit (there the layer's output is 0: relu's
# derivative at 0 and sigmoid's (1 - a) a at a = 0 are both 0), so the mask is not read
# again, except for the identity activation.  The first layer's input gradient is never
# computed.
#
# With precision="bf16" (float32 only) every GEMM goes through _bf16's door as in _network.pyx:
# the weights rounded once at the start of the call, each layer's input once before its
# forward GEMM (kept for the weight gradient), each delta once before its two GEMMs.
#
# The caller may add a _sparse.Buffers: the first layer then runs over the batch's nonzeros
# where it is sparse enough, as in _network.pyx (no widening here: x comes in the network's
# dtype).
#
# Twins: fastnn.reference.nets.MultiLayerNetExtend (predict, loss, gradient).
cimport numpy as cnp
from cython cimport floating
from libc.stdint cimport int64_t, uint8_t
from libc.stdlib cimport free, malloc

from fastnn._kernels._arrays cimport data_2d, dim, flat_data, float_type
from fastnn._kernels cimport _bf16
from fastnn._kernels._bf16 cimport Bf16Ops, Operands
from fastnn._kernels cimport _sparse
from fastnn._kernels._sparse cimport SparseOps
from fastnn._kernels._blas cimport gemm
from fastnn._kernels._cfnn cimport *
from fastnn._kernels._cnormalization cimport *

cnp.import_array()


cdef class _Net:
    """The data pointers of one call: every array checked against the sizes the weights give
    (dtype, layout, writability and exact dimensions, fastnn/_kernels/_arrays.pxd)."""
    cdef int L, n, widest, typenum
    cdef int *s
    cdef void **W
    cdef void **b
    cdef void **gamma
    cdef void **beta
    cdef double **rm
    cdef double **rv
    cdef double **inv_std
    cdef void **std
    cdef void **a
    cdef void **xn
    cdef uint8_t **mask
    cdef void *z
    cdef double *work
    cdef bint bn, dropout

    def __cinit__(self, list Ws, list bs, x, dict bn, list masks, list a_out, bint dropout,
                  bint train):
        cdef int l, k
        self.L = len(Ws)
        if self.L == 0:
            raise ValueError("Ws: a network needs at least one layer")
        self.typenum = float_type(x, "x")
        self.n = dim(x, "x", 2, 0)
        n = self.n
        self.s = <int *> malloc((self.L + 1) * sizeof(int))
        cdef size_t L = self.L
        self.W = <void **> malloc(L * sizeof(void *))
        self.b = <void **> malloc(L * sizeof(void *))
        self.gamma = <void **> malloc(L * sizeof(void *))
        self.beta = <void **> malloc(L * sizeof(void *))
        self.rm = <double **> malloc(L * sizeof(double *))
        self.rv = <double **> malloc(L * sizeof(double *))
        self.inv_std = <double **> malloc(L * sizeof(double *))
        self.std = <void **> malloc(L * sizeof(void *))
        self.a = <void **> malloc(L * sizeof(void *))
        self.xn = <void **> malloc(L * sizeof(void *))
        self.mask = <uint8_t **> malloc(L * sizeof(uint8_t *))
        if not (self.s and self.W and self.b and self.gamma and self.beta and self.rm
                and self.rv and self.inv_std and self.std and self.a and self.xn and self.mask):
            raise MemoryError()
        self.s[0] = dim(Ws[0], "Ws[0]", 2, 0)
        self.widest = 1
        for l in range(self.L):
            self.s[l + 1] = dim(Ws[l], f"Ws[{l}]", 2, 1)
            if l < self.L - 1:
                self.widest = max(self.widest, self.s[l + 1])
        if len(bs) != self.L or len(a_out) != self.L:
            raise ValueError(f"bs, a_out: expected {self.L} arrays, one per layer")
        typenum = self.typenum
        data_2d(x, "x", typenum, n, self.s[0])
        for l in range(self.L):
            k = self.s[l + 1]
            self.W[l] = data_2d(Ws[l], f"Ws[{l}]", typenum, self.s[l], k)
            self.b[l] = flat_data(bs[l], f"bs[{l}]", typenum, k)
            self.a[l] = data_2d(a_out[l], f"a_out[{l}]", typenum, n, k, True)
        self.bn = bn is not None
        if self.bn:
            for name in ("gammas", "betas", "running_means", "running_vars", "inv_std",
                         "std", "xn"):
                if len(bn[name]) != self.L - 1:
                    raise ValueError(f"{name}: expected {self.L - 1} arrays, one per hidden layer")
            for l in range(self.L - 1):
                k = self.s[l + 1]
                self.gamma[l] = flat_data(bn["gammas"][l], f"gammas[{l}]", typenum, k)
                self.beta[l] = flat_data(bn["betas"][l], f"betas[{l}]", typenum, k)
                self.rm[l] = <double *> flat_data(bn["running_means"][l], f"running_means[{l}]",
                                                  cnp.NPY_FLOAT64, k, True)
                self.rv[l] = <double *> flat_data(bn["running_vars"][l], f"running_vars[{l}]",
                                                  cnp.NPY_FLOAT64, k, True)
                self.inv_std[l] = <double *> flat_data(bn["inv_std"][l], f"inv_std[{l}]",
                                                       cnp.NPY_FLOAT64, k, True)
                self.std[l] = flat_data(bn["std"][l], f"std[{l}]", typenum, k, True)
                self.xn[l] = data_2d(bn["xn"][l], f"xn[{l}]", typenum, n, k, True)
            self.z = data_2d(bn["z"], "z", typenum, n, self.widest, True)
            self.work = <double *> flat_data(bn["work"], "work", cnp.NPY_FLOAT64,
                                             2 * self.widest, True)
        self.dropout = dropout
        if dropout and train:
            if masks is None or len(masks) != self.L - 1:
                raise ValueError(f"masks: expected {self.L - 1} arrays, one per hidden layer")
            for l in range(self.L - 1):
                self.mask[l] = <uint8_t *> data_2d(masks[l], f"masks[{l}]", cnp.NPY_BOOL, n,
                                                   self.s[l + 1])

    def __dealloc__(self):
        free(self.s)
        free(self.W)
        free(self.b)
        free(self.gamma)
        free(self.beta)
        free(self.rm)
        free(self.rv)
        free(self.inv_std)
        free(self.std)
        free(self.a)
        free(self.xn)
        free(self.mask)


cdef inline void _gemm_forward(_Net net, int l, const floating *inp, floating *out,
                               Bf16Ops *bf, SparseOps *sp) noexcept nogil:
    """out = inp @ W[l], through the bf16 door when ``bf``, over the batch's nonzeros for the
    first layer when ``sp`` and the batch is sparse enough (_network.pyx does the same)."""
    cdef int n = net.n, k = net.s[l + 1], d = net.s[l]
    if floating is float:
        if bf != NULL:
            _bf16.round_operand(inp, n * <Py_ssize_t> d, bf.inp[l])
            if not (l == 0 and sp != NULL and _sparse.forward(sp, bf.inp[0], n, d, k, bf.W[0],
                                                              out)):
                _bf16.gemm(False, False, n, k, d, 1, bf.inp[l], d, bf.W[l], k, 0, out, k)
            return
    if l == 0 and sp != NULL and _sparse.forward(sp, inp, n, d, k, net.W[0], out):
        return
    gemm(False, False, n, k, d, 1, inp, d, <floating *> net.W[l], k, 0, out, k)


cdef void _forward(_Net net, const floating *x, int activation, bint train, double momentum,
                   floating keep, Bf16Ops *bf, SparseOps *sp) noexcept nogil:
    """Forward through every layer; the logits end in a[L-1].  ``keep`` = 1 - the dropout
    ratio, the test-time factor of the book's Dropout."""
    cdef const floating *inp = x
    cdef floating *out
    cdef int l, k, L = net.L, n = net.n
    cdef bint hidden
    cdef const uint8_t *mask
    if floating is float:
        if bf != NULL:
            _bf16.round_weights(bf, <float **> net.W)
    for l in range(L):
        k = net.s[l + 1]
        hidden = l < L - 1
        out = <floating *> net.a[l]
        mask = net.mask[l] if hidden and net.dropout and train else NULL
        if hidden and net.bn:
            _gemm_forward(net, l, inp, <floating *> net.z, bf, sp)
            if floating is float:
                if train:
                    fnn_batchnorm_forward_train_f32(
                        <float *> net.z, <float *> net.b[l], <float *> net.gamma[l],
                        <float *> net.beta[l], n, k, FNN_BN_EPS, momentum, net.rm[l],
                        net.rv[l], net.work, net.inv_std[l], <float *> net.std[l],
                        <float *> net.xn[l], out, activation, mask)
                else:
                    fnn_batchnorm_forward_test_f32(
                        <float *> net.z, <float *> net.b[l], <float *> net.gamma[l],
                        <float *> net.beta[l], n, k, FNN_BN_EPS, net.rm[l], net.rv[l],
                        net.work, out, activation, keep if net.dropout else 1)
            else:
                if train:
                    fnn_batchnorm_forward_train_f64(
                        <double *> net.z, <double *> net.b[l], <double *> net.gamma[l],
                        <double *> net.beta[l], n, k, FNN_BN_EPS, momentum, net.rm[l],
                        net.rv[l], net.work, net.inv_std[l], <double *> net.std[l],
                        <double *> net.xn[l], out, activation, mask)
                else:
                    fnn_batchnorm_forward_test_f64(
                        <double *> net.z, <double *> net.b[l], <double *> net.gamma[l],
                        <double *> net.beta[l], n, k, FNN_BN_EPS, net.rm[l], net.rv[l],
                        net.work, out, activation, keep if net.dropout else 1)
        else:
            _gemm_forward(net, l, inp, out, bf, sp)
            if floating is float:
                fnn_bias_activation_f32(out, <float *> net.b[l], n, k,
                                        activation if hidden else FNN_IDENTITY)
                if mask != NULL:
                    fnn_mask_multiply_f32(out, mask, out, n * <Py_ssize_t> k)
                elif hidden and net.dropout:
                    fnn_scale_f32(out, keep, out, n * <Py_ssize_t> k)
            else:
                fnn_bias_activation_f64(out, <double *> net.b[l], n, k,
                                        activation if hidden else FNN_IDENTITY)
                if mask != NULL:
                    fnn_mask_multiply_f64(out, mask, out, n * <Py_ssize_t> k)
                elif hidden and net.dropout:
                    fnn_scale_f64(out, keep, out, n * <Py_ssize_t> k)
        inp = out


cdef void _backward(_Net net, const floating *x, floating **dW, floating **db,
                    floating **dgamma, floating **dbeta, floating *s0, floating *s1,
                    int activation, floating decay, Bf16Ops *bf, SparseOps *sp) noexcept nogil:
    # on entry a[L-1] holds d loss / d logits
    cdef int L = net.L, n = net.n, l, h, k, w
    cdef floating *delta = <floating *> net.a[L - 1]
    cdef floating *nxt
    cdef const uint8_t *mask
    cdef bint rounded = False
    for l in range(L - 1, -1, -1):
        k = net.s[l + 1]
        if floating is float:
            rounded = bf != NULL
            if rounded:
                # the layer's input was rounded by the forward pass; the delta is, once, here
                _bf16.round_operand(delta, n * <Py_ssize_t> k, bf.delta)
                if not (l == 0 and sp != NULL and _sparse.weight_gradient(sp, n, net.s[0], k,
                                                                          bf.delta, dW[0])):
                    _bf16.gemm(True, False, net.s[l], k, n, 1, bf.inp[l], net.s[l], bf.delta,
                               k, 0, dW[l], k)
        if not rounded and not (l == 0 and sp != NULL and _sparse.weight_gradient(
                sp, n, net.s[0], k, delta, dW[0])):
            gemm(True, False, net.s[l], k, n, 1, x if l == 0 else <floating *> net.a[l - 1],
                 net.s[l], delta, k, 0, dW[l], k)
        if floating is float:
            fnn_column_sum_f32(delta, db[l], n, k)
            if decay != 0:
                fnn_add_scaled_f32(dW[l], <float *> net.W[l], decay, net.s[l] * <Py_ssize_t> k)
        else:
            fnn_column_sum_f64(delta, db[l], n, k)
            if decay != 0:
                fnn_add_scaled_f64(dW[l], <double *> net.W[l], decay, net.s[l] * <Py_ssize_t> k)
        if l == 0:
            break
        # the gradient at the output of hidden layer h = l - 1, of width w
        h, w = l - 1, net.s[l]
        nxt = s1 if delta == s0 else s0
        if floating is float:
            if rounded:
                _bf16.gemm(False, True, n, w, k, 1, bf.delta, k, bf.W[l], k, 0, nxt, w)
        if not rounded:
            gemm(False, True, n, w, k, 1, delta, k, <floating *> net.W[l], k, 0, nxt, w)
        mask = net.mask[h] if net.dropout else NULL
        if net.bn:
            if floating is float:
                fnn_batchnorm_backward_f32(nxt, <float *> net.xn[h], <float *> net.gamma[h],
                                           net.inv_std[h], n, w, nxt, dgamma[h], dbeta[h],
                                           net.work, activation, <float *> net.a[h], mask)
            else:
                fnn_batchnorm_backward_f64(nxt, <double *> net.xn[h], <double *> net.gamma[h],
                                           net.inv_std[h], n, w, nxt, dgamma[h], dbeta[h],
                                           net.work, activation, <double *> net.a[h], mask)
        elif activation == FNN_IDENTITY:
            if mask != NULL:
                if floating is float:
                    fnn_mask_multiply_f32(nxt, mask, nxt, n * <Py_ssize_t> w)
                else:
                    fnn_mask_multiply_f64(nxt, mask, nxt, n * <Py_ssize_t> w)
        else:
            if floating is float:
                fnn_activation_backward_f32(nxt, <float *> net.a[h], n * <Py_ssize_t> w,
                                            activation)
            else:
                fnn_activation_backward_f64(nxt, <double *> net.a[h], n * <Py_ssize_t> w,
                                            activation)
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


cdef class _Grads:
    """Data pointers of the gradient buffers: dW (L), db (L), dgamma and dbeta (L - 1)."""
    cdef void **p

    def __cinit__(self, _Net net, list dW_out, list db_out, list dgamma_out, list dbeta_out):
        cdef int l, L = net.L
        self.p = <void **> malloc(4 * L * sizeof(void *))
        if self.p == NULL:
            raise MemoryError()
        if len(dW_out) != L or len(db_out) != L:
            raise ValueError(f"dW_out, db_out: expected {L} arrays, one per layer")
        for l in range(L):
            self.p[l] = data_2d(dW_out[l], f"dW_out[{l}]", net.typenum, net.s[l], net.s[l + 1], True)
            self.p[L + l] = flat_data(db_out[l], f"db_out[{l}]", net.typenum, net.s[l + 1], True)
        if net.bn:
            if len(dgamma_out) != L - 1 or len(dbeta_out) != L - 1:
                raise ValueError(f"dgamma_out, dbeta_out: expected {L - 1} arrays")
            for l in range(L - 1):
                self.p[2 * L + l] = flat_data(dgamma_out[l], f"dgamma_out[{l}]", net.typenum,
                                              net.s[l + 1], True)
                self.p[3 * L + l] = flat_data(dbeta_out[l], f"dbeta_out[{l}]", net.typenum,
                                              net.s[l + 1], True)

    def __dealloc__(self):
        free(self.p)


def forward(list Ws,       # IN  L weights (sizes[l], sizes[l+1])
            list bs,       # IN  L biases
            x,             # IN  (n, sizes[0])
            dict bn,       # IN/OUT batch normalization's arrays (see _Net), or None
            list masks,    # IN  L - 1 dropout masks (n, sizes[l+1]), or None at test time
            list a_out,    # OUT L layer outputs; the last gets the logits
            bint dropout, int activation, bint train_flg, double momentum, double keep,
            bf16=None,     # OUT _bf16.Operands (precision="bf16", float32), or None
            sparse=None):  # OUT _sparse.Buffers (the first layer on a sparse x), or None
    """Logits of the network for the rows of ``x``, into ``a_out[-1]``.  In training mode
    (``train_flg``) batch normalization uses the batch's statistics and updates the running
    ones, and the masks drop units; in test mode the running statistics normalise and every
    unit is kept, scaled by ``keep``."""
    cdef _Net net = _Net(Ws, bs, x, bn, masks, a_out, dropout, train_flg)
    if train_flg and net.n == 0 and net.bn:
        raise ValueError("x: an empty batch has no mean or variance")
    cdef Bf16Ops *bf = _operands(bf16, net, False)
    cdef SparseOps *sp = _sparse.buffers_for(sparse, net.typenum, net.n, net.s[0], False,
                                             bf != NULL)
    if net.n == 0:
        return
    cdef const void *xp = cnp.PyArray_DATA(<cnp.ndarray> x)
    with nogil:
        if net.typenum == cnp.NPY_FLOAT32:
            _forward[float](net, <const float *> xp, activation, train_flg, momentum,
                            <float> keep, bf, sp)
        else:
            _forward[double](net, <const double *> xp, activation, train_flg, momentum, keep,
                             NULL, sp)


cdef Bf16Ops *_operands(object bf16, _Net net, bint backward) except? NULL:
    """The checked operand buffers of a bf16 pass, or NULL for the dtype's own precision."""
    if bf16 is None:
        return NULL
    if not isinstance(bf16, Operands):
        raise TypeError(f"bf16: expected a _bf16.Operands or None, got {type(bf16).__name__}")
    if net.typenum != cnp.NPY_FLOAT32:
        raise TypeError("bf16: bfloat16 operands need a float32 network")
    (<Operands> bf16).check(net.L, net.s, net.n, backward)
    return &(<Operands> bf16).ops


def gradient(list Ws, list bs,
             x,                  # IN  (n, sizes[0]), n >= 1
             t,                  # IN  int64 labels (n,) or targets (n, sizes[L]) of x's dtype
             bint labels,
             dict bn, list masks, list a_out, bint dropout,
             list dW_out,        # OUT L weight gradients, or None for the loss alone
             list db_out,        # OUT L bias gradients
             list dgamma_out,    # OUT L - 1 (BN only)
             list dbeta_out,     # OUT L - 1 (BN only)
             s0, s1,             # OUT (n, widest hidden width) workspace
             row_loss_out,       # OUT (n,) float64
             int activation, bint exact, double weight_decay_lambda, bint train_flg,
             double momentum, double keep,
             bf16=None,          # OUT _bf16.Operands (precision="bf16", float32), or None
             sparse=None):       # OUT _sparse.Buffers (the first layer on a sparse x), or None
    """Loss (without weight decay) of the network on one batch and, unless ``dW_out`` is
    None, the gradients (training mode: ``train_flg`` must be True for them)."""
    cdef _Net net = _Net(Ws, bs, x, bn, masks, a_out, dropout, train_flg)
    cdef int n = net.n, L = net.L, K = net.s[L]
    cdef const void *xp = cnp.PyArray_DATA(<cnp.ndarray> x)
    cdef const void *tp
    if labels:
        dim(t, "t", 1, 0)
        tp = flat_data(t, "t", cnp.NPY_INT64, n)
    else:
        tp = data_2d(t, "t", net.typenum, n, K)
    cdef bint backward = dW_out is not None
    cdef _Grads g = _Grads(net, dW_out, db_out, dgamma_out, dbeta_out) if backward else None
    cdef void *s0p = NULL
    cdef void *s1p = NULL
    if backward:
        if not train_flg:
            raise ValueError("train_flg: the gradient is taken in training mode")
        s0p = data_2d(s0, "s0", net.typenum, n, net.widest, True)
        s1p = data_2d(s1, "s1", net.typenum, n, net.widest, True)
    cdef double *rl = <double *> flat_data(row_loss_out, "row_loss_out", cnp.NPY_FLOAT64, n, True)
    cdef Bf16Ops *bf = _operands(bf16, net, backward)
    cdef SparseOps *sp = _sparse.buffers_for(sparse, net.typenum, n, net.s[0], backward,
                                             bf != NULL)
    cdef double result
    if n == 0:
        raise ValueError("x: an empty batch has no mean loss")
    with nogil:
        if net.typenum == cnp.NPY_FLOAT32:
            _forward[float](net, <const float *> xp, activation, train_flg, momentum,
                            <float> keep, bf, sp)
            result = _loss_grad[float](<float *> net.a[L - 1], tp, labels, rl, n, K, exact)
            if backward:
                _backward[float](net, <const float *> xp, <float **> g.p, <float **> g.p + L,
                                 <float **> g.p + 2 * L, <float **> g.p + 3 * L, <float *> s0p,
                                 <float *> s1p, activation, <float> weight_decay_lambda, bf,
                                 sp)
        else:
            _forward[double](net, <const double *> xp, activation, train_flg, momentum, keep,
                             NULL, sp)
            result = _loss_grad[double](<double *> net.a[L - 1], tp, labels, rl, n, K, exact)
            if backward:
                _backward[double](net, <const double *> xp, <double **> g.p,
                                  <double **> g.p + L, <double **> g.p + 2 * L,
                                  <double **> g.p + 3 * L, <double *> s0p, <double *> s1p,
                                  activation, weight_decay_lambda, NULL, sp)
    return result
