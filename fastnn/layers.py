"""The book's layers (``common/layers.py`` and chapter 5's graph nodes) over compiled kernels.

Replace ``from common.layers import ...`` by ``from fastnn.layers import ...``.  Every layer has
``forward(...)`` and ``backward(dout)`` with the book's semantics and attribute names; each
names its twin in :mod:`fastnn.reference.layers`.

Two choices differ from the book and are relied on by tests:

* ``backward`` never modifies its argument (the book's ``Relu.backward`` zeroes the caller's
  ``dout`` in place); every gradient is a new array.
* a layer instance holds the cache of its last ``forward`` for ``backward``: one instance must
  not be used from two threads at once; separate instances may (the kernels release the GIL).
"""
import math

import numpy as np

from fastnn import _validation as v
from fastnn import threads
from fastnn._kernels import _activations, _conv, _dense, _loss, _normalization
from fastnn.functions import binary_cross_entropy, fused_softmax_loss

__all__ = [
    "MulLayer", "AddLayer", "SquareLayer", "Identity", "Relu", "Sigmoid", "Affine", "Linear",
    "SoftmaxWithLoss", "SigmoidWithLoss",
    "Dropout", "BatchNormalization",  # chapter 6
]
__all__ += ["Convolution", "Pooling"]


def _require_forward(layer, cached):
    if cached is None:
        raise ValueError(f"{type(layer).__name__}.backward() called before forward()")


# --- computational-graph nodes (chapter 5): scalars or arrays, plain arithmetic -------------

class MulLayer:
    """z = x * y; backward gives (dout * y, dout * x)."""

    def __init__(self):
        self.x = None
        self.y = None

    def forward(self, x, y):
        self.x = x
        self.y = y
        return x * y

    def backward(self, dout):
        _require_forward(self, self.x)
        return dout * self.y, dout * self.x


class AddLayer:
    """z = x + y; backward passes dout to both inputs."""

    def __init__(self):
        self.forwarded = False

    def forward(self, x, y):
        self.forwarded = True
        return x + y

    def backward(self, dout):
        _require_forward(self, self.forwarded or None)
        return dout * 1, dout * 1


class SquareLayer:
    """z = x**2; backward gives dout * 2x (the chain rule's example z = (x + y)**2)."""

    def __init__(self):
        self.x = None

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, dout):
        _require_forward(self, self.x)
        return dout * 2 * self.x


class Identity:
    """The identity activation: a stack of Affine + Identity layers is one linear map."""

    def __init__(self):
        self.forwarded = False

    def forward(self, x):
        self.forwarded = True
        return x

    def backward(self, dout):
        _require_forward(self, self.forwarded or None)
        return dout


# --- activations ------------------------------------------------------------------------------

class Relu:
    """max(0, x).  ``mask`` is the book's: True where x <= 0.

    Twin: :class:`fastnn.reference.layers.Relu`.
    """

    def __init__(self):
        self.mask = None

    def forward(self, x):
        x = v.as_float(x, "x")
        out = np.empty_like(x)
        self.mask = np.empty(x.shape, dtype=bool)
        _activations.relu_forward(x, out, self.mask)
        return out

    def backward(self, dout):
        mask = self.mask  # read once: the kernel must get the mask whose shape was checked
        _require_forward(self, mask)
        dout = v.as_float(dout, "dout")
        # the public attribute may have been replaced: any 0/1 array-like counts by its truth
        mask = np.asarray(mask, dtype=bool, order="C")
        v.check_shape(dout, mask.shape, "dout")
        dx = np.empty_like(dout)
        _activations.relu_backward(dout, mask, dx)
        return dx


class Sigmoid:
    """1 / (1 + exp(-x)); ``out`` is kept for backward: dout * (1 - out) * out.

    Twin: :class:`fastnn.reference.layers.Sigmoid`.
    """

    def __init__(self):
        self.out = None

    def forward(self, x):
        x = v.as_float(x, "x")
        out = np.empty_like(x)
        _activations.sigmoid_forward(x, out)
        self.out = out
        return out

    def backward(self, dout):
        out = self.out  # read once: the kernel must get the array whose shape was checked
        _require_forward(self, out)
        dtype = v.compute_dtype(("dout", dout), ("out", out))
        dout = v.as_float(dout, "dout", dtype)
        v.check_shape(dout, out.shape, "dout")
        out = np.asarray(out, dtype=dtype, order="C")  # the attribute may be any view by now
        dx = np.empty_like(dout)
        _activations.sigmoid_backward(dout, out, dx)
        return dx


# --- dense layers -------------------------------------------------------------------------------

def _gemm_weight(W, transposed, dtype):
    """W as a C-contiguous GEMM operand and the transpose flag that recovers it.

    The layer's product is x @ W (``transposed`` False) or x @ W.T.  A Fortran-ordered W is
    used through its C-ordered transpose with the flag flipped, so it is never copied.
    Returns ``(operand, flag, flipped)``.
    """
    if W.dtype == dtype:
        if W.flags.c_contiguous:
            return W, transposed, False
        if W.flags.f_contiguous:
            return W.T, not transposed, True
    return np.ascontiguousarray(W, dtype=dtype), transposed, False


class _Dense:
    """x @ W + b (``Affine``) or x @ W.T + b (``Linear``) on one compiled GEMM path."""

    _transposed = False

    def __init__(self, W, b):
        # references to the caller's arrays: in-place updates of params are seen here
        self.W = W
        self.b = b
        self.x = None
        self.original_x_shape = None
        self.dW = None
        self.db = None

    def _shapes(self, W, b):
        return v.dense_sizes(W, b, self._transposed)

    def forward(self, x):
        W, b = self.W, self.b  # read once: the kernel must get the arrays that were checked
        n_in, n_out = self._shapes(W, b)
        dtype = v.common_contiguous_dtype(x, W, b)
        if dtype is not None and x.ndim == 2 and 0 < x.shape[0] <= v.GEMM_MAX:
            x2, single, flag = x, False, self._transposed  # nothing to convert
        else:
            dtype = v.compute_dtype(("x", x), ("W", W), ("b", b))
            x2, single = v.as_batch(x, "x", dtype)
            W, flag, _ = _gemm_weight(W, self._transposed, dtype)
            b = v.as_float(b, "b", dtype)
        if x2.shape[1] != n_in:
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {np.shape(x)}) but W "
                f"{self.W.shape} expects {n_in}"
            )
        out = np.empty((x2.shape[0], n_out), dtype=dtype)
        with threads.for_work(x2.shape[0] * n_in * n_out):
            _dense.dense_forward(x2, W, b, out, flag)
        self.x = x2
        self.original_x_shape = np.shape(x)
        return out.reshape(-1) if single else out

    def backward(self, dout, compute_dx=True):
        """Set ``dW`` and ``db``; return dx in the forward input's shape.

        ``compute_dx=False`` skips the input gradient (a third of the work) and returns None:
        the first layer of a network never needs it.
        """
        # read once: the kernels must get the arrays whose shapes were checked
        x, x_shape, W = self.x, self.original_x_shape, self.W
        _require_forward(self, x)
        n_in, n_out = self._shapes(W, self.b)
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"x (the cached forward input) must be a 2-D array, got "
                             f"{type(x).__name__} of shape {np.shape(x)}; was it reassigned?")
        if x.shape[1] != n_in:
            # W was replaced since forward: its GEMMs would run past the ends of dW and dx
            raise ValueError(
                f"W {W.shape} expects {n_in} features per sample, but forward() saw "
                f"{x.shape[1]}; call forward() again after replacing W"
            )
        dtype = v.common_contiguous_dtype(dout, x, W)
        if dtype is None:
            dtype = v.compute_dtype(("dout", dout), ("x", x), ("W", W))
            dout = v.as_float(dout, "dout", dtype)
        if dout.shape not in ((x.shape[0], n_out), (n_out,) if x.shape[0] == 1 else None):
            raise ValueError(
                f"dout must have shape {(x.shape[0], n_out)} (the forward output's), "
                f"got {dout.shape}"
            )
        dout = dout.reshape(x.shape[0], n_out)
        x = np.asarray(x, dtype=dtype, order="C")  # the public attribute may be any view by now
        W, flag, flipped = _gemm_weight(W, self._transposed, dtype)
        dW = np.empty(W.shape, dtype=dtype)
        db = np.empty(n_out, dtype=dtype)
        dx = np.empty(x.shape, dtype=dtype) if compute_dx else None
        with threads.for_work(x.shape[0] * n_in * n_out):
            _dense.dense_backward(dout, x, W, dW, db, dx, flag)
        self.dW = dW.T if flipped else dW
        self.db = db
        return dx.reshape(x_shape) if compute_dx else None


class Affine(_Dense):
    """out = x @ W + b, W of shape (in, out) as in the book.

    Inputs of more than two dimensions are flattened to ``(N, -1)`` and ``backward`` restores
    their shape; a 1-D input is one sample.  ``W`` and ``b`` are the caller's arrays (not
    copies), so ``params['W1'] -= lr * grad`` is seen by the layer.

    Twin: :class:`fastnn.reference.layers.Affine`.
    """


class Linear(_Dense):
    """out = x @ W.T + b, W of shape (out, in) as PyTorch stores it.

    Twin: :class:`fastnn.reference.layers.Linear`.
    """

    _transposed = True


# --- output layers with their losses -------------------------------------------------------------

class SoftmaxWithLoss:
    """Softmax and cross-entropy fused: ``forward(x, t)`` returns the loss.

    ``t`` holds one-hot (or soft) targets of ``x``'s shape, or integer labels of shape
    ``(N,)``/``(N, 1)`` (a scalar for one 1-D sample).  The loss is the book's
    ``-sum t log(y + 1e-7) / N``; with ``exact=True`` the exact ``-sum t log_softmax(x) / N``.
    ``backward(dout=1)`` returns ``(y - t) * dout / N``.

    Twin: :class:`fastnn.reference.layers.SoftmaxWithLoss`.
    """

    def __init__(self, exact=False):
        self.exact = exact
        self.loss = None
        self.y = None
        self.t = None
        self._targets = None

    def forward(self, x, t):
        x2, kind, t_res, dtype = v.as_scores_and_targets(x, t, "x")
        y, loss = fused_softmax_loss(x2, kind, t_res, self.exact)
        self.y = y.reshape(np.shape(x))
        self.t = t
        # what backward needs, in one attribute: it reads the y and targets of one forward
        self._targets = (kind, t_res, y, self.y.shape)
        self.loss = dtype.type(loss)
        return self.loss

    def backward(self, dout=1):
        cache = self._targets
        _require_forward(self, cache)
        kind, t, y, shape = cache
        dout = v.check_finite_scalar(dout, "dout")
        dx = np.empty_like(y)
        _loss.softmax_xent_backward(y, t, kind == "labels", dx, dout)
        return dx.reshape(shape)


class SigmoidWithLoss:
    """Sigmoid output with binary cross-entropy, for two classes with P(y0) = 1 - P(y1).

    ``forward(x, t)`` takes logits ``x`` and 0/1 targets of the same shape and returns the
    loss averaged over the batch (first axis), computed stably from the logits;
    ``backward(dout=1)`` returns ``(y - t) * dout / N``.

    Twin: :class:`fastnn.reference.layers.SigmoidWithLoss`.
    """

    def __init__(self):
        self.loss = None
        self.y = None
        self.t = None

    def forward(self, x, t):
        dtype = v.compute_dtype(("x", x), ("t", t))
        x = v.as_float(x, "x", dtype)
        t = v.as_float(t, "t", dtype)
        self.loss = binary_cross_entropy(x, t, from_logits=True)
        y = np.empty_like(x)
        _activations.sigmoid_forward(x, y)
        self.y, self.t = y, t
        return self.loss

    def backward(self, dout=1):
        _require_forward(self, self.y)
        dout = v.check_finite_scalar(dout, "dout")
        batch_size = self.y.shape[0] if self.y.ndim else 1
        return (self.y - self.t) * dout / batch_size


# --- chapter 6: dropout and batch normalization ---------------------------------------------------

def _bit_generator(generator):
    """The bit generator whose doubles make the dropout masks: NumPy's global one (the
    book's ``np.random.rand``, fixed by ``np.random.seed``) when ``generator`` is None."""
    return np.random.get_bit_generator() if generator is None else generator.bit_generator


class Dropout:
    """The book's Dropout: in training, ``mask = u > dropout_ratio`` for ``u`` uniform in
    [0, 1) and ``out = x * mask``; at test time ``out = x * (1 - dropout_ratio)``.

    The masks are the book's: ``u`` is ``np.random.rand(*x.shape)``, drawn from NumPy's global
    generator in the same order, so ``np.random.seed(s)`` gives the book's masks and numbers
    (drawn by a vectorised MT19937 in C, several times faster than NumPy's own).  With
    ``rng`` (a seed or ``np.random.Generator``) they come from that Generator's ``random``
    instead: an independent stream that leaves the global generator alone (drawn through the
    Generator's own next_double, one call per value: not faster).  ``mask`` (bool,
    x's shape) is kept for ``backward``, which returns ``dout * mask``.

    Twin: :class:`fastnn.reference.normalization.Dropout`.
    """

    def __init__(self, dropout_ratio=0.5, rng=None):
        self.dropout_ratio = v.check_ratio(dropout_ratio, "dropout_ratio")
        self.rng = None if rng is None else np.random.default_rng(rng)
        self.mask = None

    def forward(self, x, train_flg=True):
        x = v.as_float(x, "x")
        out = np.empty_like(x)
        if train_flg:
            mask = np.empty(x.shape, dtype=bool)
            _normalization.dropout_mask(_bit_generator(self.rng), mask, self.dropout_ratio)
            _normalization.mask_multiply(x, mask, out)
            self.mask = mask
        else:
            _normalization.scale(x, 1.0 - self.dropout_ratio, out)
        return out

    def backward(self, dout):
        mask = self.mask  # read once: the kernel must get the mask whose shape was checked
        _require_forward(self, mask)
        dout = v.as_float(dout, "dout")
        # the public attribute may have been replaced: any 0/1 array-like counts by its truth
        mask = np.asarray(mask, dtype=bool, order="C")
        v.check_shape(dout, mask.shape, "dout")
        dx = np.empty_like(dout)
        _normalization.mask_multiply(dout, mask, dx)
        return dx


def _as_statistic(stat, d, name):
    """A running statistic as a new float64 (d,) array (the book rebinds a new array at every
    training step too, so the caller's array is never modified)."""
    stat = np.array(stat, dtype=np.float64, order="C", copy=True)
    if stat.shape != (d,):
        raise ValueError(f"{name} must have shape ({d},), one value per feature, got {stat.shape}")
    return stat


class BatchNormalization:
    """The book's BatchNormalization: each feature normalised over the batch, then scaled by
    ``gamma`` and shifted by ``beta``.

    ``x`` is 2-D ``(N, D)`` or 4-D ``(N, C, H, W)``, flattened to ``(N, C*H*W)`` as the book
    does, so that ``gamma`` and ``beta`` have one entry per feature, ``(D,)`` or
    ``(C*H*W,)``.  In training (``train_flg=True``) ``xn = (x - mean) / sqrt(var + 10e-7)``
    with the batch's mean and biased variance, and ``running_mean``/``running_var`` become
    ``momentum * running + (1 - momentum) * batch``, float64 arrays (zeros at the first
    forward, as the book's); at test time the running statistics normalise.  ``backward``
    sets ``dgamma``, ``dbeta`` and returns dx in the input's shape.

    Each pass is fused in C: forward is two passes over the batch (the statistics, then
    normalise-scale-shift), backward two (the column sums, then dx), with the statistics in
    double also for float32 data.  ``xn``, ``std`` and ``batch_size`` are kept as in the
    book; ``xc`` is recomputed from them on access.  ``gamma`` and ``beta`` are the caller's
    arrays (not copies), as in ``Affine``.

    Twin: :class:`fastnn.reference.normalization.BatchNormalization`.
    """

    def __init__(self, gamma, beta, momentum=0.9, running_mean=None, running_var=None):
        self.gamma = gamma
        self.beta = beta
        self.momentum = v.check_finite_scalar(momentum, "momentum")
        self.input_shape = None
        self.running_mean = running_mean
        self.running_var = running_var
        self.batch_size = None
        self.xn = None
        self.std = None
        self.dgamma = None
        self.dbeta = None
        self._inv_std = None

    @property
    def xc(self):
        """x - mean of the last training batch (recomputed as xn * std)."""
        return None if self.xn is None else self.xn * self.std

    def _batch(self, x, gamma, beta):
        """(x as C-contiguous (N, D), gamma, beta as (D,) arrays of the compute dtype)."""
        shape = np.shape(x)
        if len(shape) not in (2, 4):
            raise ValueError(f"x must be 2-D (N, D) or 4-D (N, C, H, W), got shape {shape}")
        d = math.prod(shape[1:])
        for name, p in (("gamma", gamma), ("beta", beta)):
            if np.shape(p) != (d,):
                raise ValueError(f"{name} must have shape ({d},), one value per feature of x "
                                 f"(shape {shape}), got {np.shape(p)}")
        dtype = v.compute_dtype(("x", x), ("gamma", gamma), ("beta", beta))
        x2 = v.as_float(x, "x", dtype).reshape(shape[0], d)
        return x2, v.as_float(gamma, "gamma", dtype), v.as_float(beta, "beta", dtype)

    def forward(self, x, train_flg=True):
        x2, gamma, beta = self._batch(x, self.gamma, self.beta)
        n, d = x2.shape
        if self.running_mean is None:
            self.running_mean, self.running_var = np.zeros(d), np.zeros(d)
        running_mean = _as_statistic(self.running_mean, d, "running_mean")
        running_var = _as_statistic(self.running_var, d, "running_var")
        out = np.empty_like(x2)
        if train_flg:
            if n == 0:
                raise ValueError(f"x is an empty batch, shape {np.shape(x)}: its mean and "
                                 "variance are undefined")
            xn = np.empty_like(x2)
            std = np.empty(d, dtype=x2.dtype)
            mean, inv_std = np.empty(d), np.empty(d)
            _normalization.batchnorm_forward_train(x2, gamma, beta, self.momentum,
                                                   running_mean, running_var, mean, inv_std,
                                                   std, xn, out)
            self.running_mean, self.running_var = running_mean, running_var
            self.batch_size, self.xn, self.std, self._inv_std = n, xn, std, inv_std
            self.input_shape = np.shape(x)
        else:
            _normalization.batchnorm_forward_test(x2, gamma, beta, running_mean, running_var,
                                                  np.empty(d), out)
        return out.reshape(np.shape(x))

    def backward(self, dout):
        # read once: the kernel must get the arrays whose shapes were checked
        xn, inv_std, shape = self.xn, self._inv_std, self.input_shape
        if xn is None or inv_std is None:
            raise ValueError("BatchNormalization.backward() called before a training-mode "
                             "forward()")
        n, d = xn.shape
        if np.shape(dout) not in (tuple(shape), (n, d)):
            raise ValueError(f"dout must have shape {tuple(shape)} (the forward input's), got "
                             f"{np.shape(dout)}")
        if np.shape(self.gamma) != (d,):
            raise ValueError(f"gamma must have shape ({d},) as in forward(), got "
                             f"{np.shape(self.gamma)}")
        dtype = v.compute_dtype(("dout", dout), ("xn", xn), ("gamma", self.gamma))
        dout2 = v.as_float(dout, "dout", dtype).reshape(n, d)
        xn = np.asarray(xn, dtype=dtype, order="C")
        gamma = v.as_float(self.gamma, "gamma", dtype)
        dx = np.empty((n, d), dtype=dtype)
        dgamma, dbeta = np.empty(d, dtype=dtype), np.empty(d, dtype=dtype)
        _normalization.batchnorm_backward(dout2, xn, gamma, inv_std, dx, dgamma, dbeta,
                                          np.empty(2 * d))
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx.reshape(shape)

# --- convolution and pooling (chapter 7) ---------------------------------------------------------

class Convolution:
    """The book's convolution: ``out[n, f] = sum_c x[n, c] (*) W[f, c] + b[f]`` over windows
    of ``W``'s FH x FW, ``stride`` apart, on the input zero-padded by ``pad``.

    ``x`` is (N, C, H, W) and ``W`` (FN, C, FH, FW) (rectangular filters allowed); the output
    is (N, FN, OH, OW) with OH = (H + 2 pad - FH) // stride + 1, OW likewise.  ``W`` and ``b``
    are the caller's arrays (not copies), as in ``Affine``; ``backward`` sets ``dW`` and ``db``.

    The compiled path never builds the book's whole ``col`` matrix (see the design block of
    fastnn/_kernels/_conv.pyx): ``col`` and ``col_W`` are still there, computed when read.

    Twin: :class:`fastnn.reference.conv.Convolution`.
    """

    def __init__(self, W, b, stride=1, pad=0):
        v.check_window(stride, pad, "Convolution")
        self.W = W
        self.b = b
        self.stride = stride
        self.pad = pad
        self.x = None
        self.dW = None
        self.db = None
        self._work = None  # the kernels' scratch, kept from call to call

    def _scratch(self, x, W, stride, pad):
        """The kernels' scratch array for this geometry and dtype, allocated once."""
        size = _conv.conv_work_size(x.shape[1], x.shape[2], x.shape[3], W.shape[0], W.shape[2],
                                    W.shape[3], stride, pad)
        work = self._work
        if work is None or work.size != size or work.dtype != x.dtype:
            work = self._work = np.empty(size, dtype=x.dtype)
        return work

    @staticmethod
    def _gemm_size(x, W, stride, pad):
        # the kernels' GEMMs are blocks that stay in cache: small, one BLAS thread each
        return _conv.conv_gemm_size(x.shape[1], x.shape[2], x.shape[3], W.shape[0], W.shape[2],
                                    W.shape[3], stride, pad)

    @property
    def col(self):
        """The book's ``im2col`` of the last forward input (built on request)."""
        if self.x is None:
            return None
        from fastnn.util import im2col
        return im2col(self.x, self.W.shape[2], self.W.shape[3], self.stride, self.pad)

    @property
    def col_W(self):
        """The book's ``W.reshape(FN, -1).T``."""
        return np.reshape(self.W, (self.W.shape[0], -1)).T

    def forward(self, x):
        W, b = self.W, self.b  # read once: the kernel must get the arrays that were checked
        stride, pad = v.check_window(self.stride, self.pad, "Convolution")
        v.check_filters(W, b)
        dtype = v.compute_dtype(("x", x), ("W", W), ("b", b))
        x = v.as_images(x, "x", dtype)
        v.check_filters(W, b, x.shape)
        OH, OW = v.window_output_size(x.shape, W.shape[2:], stride, pad, "x", "the filter W")
        W = v.as_float(W, "W", dtype)
        b = v.as_float(b, "b", dtype)
        out = np.empty((x.shape[0], W.shape[0], OH, OW), dtype=dtype)
        if out.size:
            with threads.for_work(self._gemm_size(x, W, stride, pad)):
                _conv.conv_forward(x, W, b, out, stride, pad, False,
                                   self._scratch(x, W, stride, pad))
        self.x = x
        return out

    def backward(self, dout, compute_dx=True):
        """Set ``dW`` and ``db``; return dx of the forward input's shape.

        ``compute_dx=False`` skips the input gradient and returns None: a network's first
        layer never needs it.
        """
        x, W = self.x, self.W  # read once: the kernel must get the arrays that were checked
        _require_forward(self, x)
        stride, pad = v.check_window(self.stride, self.pad, "Convolution")
        if not isinstance(x, np.ndarray) or x.ndim != 4:
            raise ValueError(f"x (the cached forward input) must be a 4-D array, got "
                             f"{type(x).__name__} of shape {np.shape(x)}; was it reassigned?")
        v.check_filters(W, self.b, x.shape)
        OH, OW = v.window_output_size(x.shape, W.shape[2:], stride, pad, "x", "the filter W")
        dtype = v.compute_dtype(("dout", dout), ("x", x), ("W", W))
        dout = v.as_float(dout, "dout", dtype)
        v.check_shape(dout, (x.shape[0], W.shape[0], OH, OW), "dout")
        x = np.asarray(x, dtype=dtype, order="C")  # the public attribute may be any view by now
        W = v.as_float(W, "W", dtype)
        dW = np.empty(W.shape, dtype=dtype)
        db = np.empty(W.shape[0], dtype=dtype)
        dx = np.empty(x.shape, dtype=dtype) if compute_dx else None
        if x.shape[0] == 0:
            dW.fill(0)
            db.fill(0)
        else:
            with threads.for_work(self._gemm_size(x, W, stride, pad)):
                _conv.conv_backward(dout, x, W, dW, db, dx, stride, pad, None,
                                    self._scratch(x, W, stride, pad))
        self.dW, self.db = dW, db
        return dx


class Pooling:
    """The book's max pooling: the maximum of each ``pool_h`` x ``pool_w`` window, ``stride``
    apart, of the input zero-padded by ``pad`` (the book's default stride is 2).

    ``x`` (N, C, H, W) gives (N, C, OH, OW), OH = (H + 2 pad - pool_h) // stride + 1.  The
    padding is by zeros, as the book's im2col pads (PyTorch's max_pool2d pads by -inf: the two
    agree wherever a window holds a value >= 0, as after a ReLU).  ``backward`` routes each
    gradient to the window's argmax, the first maximum in (ky, kx) order (NaN first), as the
    book's ``np.argmax`` does; ``arg_max`` is the book's array of those window indices.

    Twin: :class:`fastnn.reference.conv.Pooling`.
    """

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        v.check_count(pool_h, "Pooling: pool_h")
        v.check_count(pool_w, "Pooling: pool_w")
        v.check_window(stride, pad, "Pooling")
        self.pool_h = pool_h
        self.pool_w = pool_w
        self.stride = stride
        self.pad = pad
        self.x = None
        self._argmax = None

    @property
    def arg_max(self):
        """The book's ``arg_max``: window indices ky * pool_w + kx, rows (n, oh, ow, c)."""
        a = self._argmax
        return None if a is None else a.transpose(0, 2, 3, 1).reshape(-1).astype(np.intp)

    def _geometry(self, shape):
        ph = v.check_count(self.pool_h, "Pooling: pool_h")
        pw = v.check_count(self.pool_w, "Pooling: pool_w")
        stride, pad = v.check_window(self.stride, self.pad, "Pooling")
        OH, OW = v.window_output_size(shape, (ph, pw), stride, pad, "x", "the pooling window")
        return ph, pw, stride, pad, OH, OW

    def forward(self, x):
        x = v.as_images(x, "x")
        ph, pw, stride, pad, OH, OW = self._geometry(x.shape)
        N, C = x.shape[:2]
        out = np.empty((N, C, OH, OW), dtype=x.dtype)
        argmax = np.empty((N, C, OH, OW), dtype=np.int32)
        if out.size:
            _conv.maxpool_forward(x, out, argmax, ph, pw, stride, pad)
        self.x = x
        self._argmax = argmax
        self._window = (ph, pw, stride, pad)
        return out

    def backward(self, dout):
        x, argmax = self.x, self._argmax
        _require_forward(self, argmax)
        ph, pw, stride, pad = self._window  # the window of the forward that made argmax
        shape = np.shape(x)
        if len(shape) != 4:
            raise ValueError(f"x (the cached forward input) must be a 4-D array, got shape "
                             f"{shape}; was it reassigned?")
        dtype = v.compute_dtype(("dout", dout))
        dout = v.as_float(dout, "dout", dtype)
        v.check_shape(dout, argmax.shape, "dout")
        dx = np.empty(shape, dtype=dtype)
        if dout.size and dx.size:
            _conv.maxpool_backward(dout, argmax, dx, ph, pw, stride, pad)
        else:
            dx.fill(0)
        return dx
