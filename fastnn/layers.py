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


_UNSET = object()  # a computed cache attribute that no caller assigned


def _require_forward(layer, cached, attr=None):
    if cached is None:
        what = f" ({type(layer).__name__}.{attr} is None)" if attr else ""
        raise ValueError(f"{type(layer).__name__}.backward() called before forward(){what}")


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
        _require_forward(self, mask, "mask")
        mask = v.as_mask(mask, "Relu.mask")  # the public attribute may have been replaced
        dout = v.as_float(dout, "dout")
        v.check_same_shape(dout, "dout", mask, "Relu.mask")
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
        _require_forward(self, out, "out")
        dtype = v.compute_dtype(("dout", dout), ("Sigmoid.out", out))
        dout = v.as_float(dout, "dout", dtype)
        out = v.as_float(out, "Sigmoid.out", dtype)  # the attribute may be any view by now
        v.check_same_shape(dout, "dout", out, "Sigmoid.out")
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
        if (dtype is not None and x.ndim == 2 and 0 < x.shape[0] <= v.GEMM_MAX
                and b.shape == (n_out,)):
            x2, single, flag = x, False, self._transposed  # nothing to convert
        else:
            x, W = v.as_plain(x, "x"), v.as_plain(W, "W")
            dtype = v.compute_dtype(("x", x), ("W", W), *v.bias_dtype(b))
            x2, single = v.as_batch(x, "x", dtype)
            W, flag, _ = _gemm_weight(W, self._transposed, dtype)
            b = v.as_bias(b, n_out, dtype)
        if x2.shape[1] != n_in:
            raise ValueError(
                f"x has {x2.shape[1]} features per sample (shape {np.shape(x)}) but W "
                f"{np.shape(v.as_plain(self.W, 'W'))} expects {n_in}"
            )
        out = np.empty((x2.shape[0], n_out), dtype=dtype)
        with threads.for_work(x2.shape[0] * n_in * n_out):
            _dense.dense_forward(x2, W, b, out, flag)
        self.x = x2
        self.original_x_shape = np.shape(v.as_plain(x, "x"))
        return out.reshape(-1) if single else out

    def backward(self, dout, compute_dx=True):
        """Set ``dW`` and ``db``; return dx in the forward input's shape.

        ``compute_dx=False`` skips the input gradient (a third of the work) and returns None:
        the first layer of a network never needs it.
        """
        # read once: the kernels must get the arrays whose shapes were checked
        name = type(self).__name__
        x, x_shape, W = self.x, self.original_x_shape, v.as_plain(self.W, "W")
        _require_forward(self, x, "x")
        n_in, n_out = self._shapes(W, self.b)
        x = v.as_plain(x, f"{name}.x")  # the public attribute may be anything by now
        if not isinstance(x, np.ndarray) or x.ndim != 2:
            raise ValueError(f"{name}.x (the cached forward input) must be a 2-D array, got "
                             f"{type(x).__name__} of shape {np.shape(x)}; was it reassigned?")
        if x.shape[1] != n_in:
            # W was replaced since forward: its GEMMs would run past the ends of dW and dx
            raise ValueError(
                f"W {W.shape} expects {n_in} features per sample, but forward() saw "
                f"{x.shape[1]} ({name}.x {x.shape}); call forward() again after replacing W "
                "or x"
            )
        dtype = v.common_contiguous_dtype(dout, x, W)
        if dtype is None:
            dtype = v.compute_dtype(("dout", dout), (f"{name}.x", x), ("W", W))
            dout = v.as_float(dout, "dout", dtype)
        if dout.shape not in ((x.shape[0], n_out), (n_out,) if x.shape[0] == 1 else None):
            raise ValueError(
                f"dout must have shape {(x.shape[0], n_out)} (the forward output's), got "
                f"{dout.shape} ({name}.x is {x.shape}, W {W.shape})"
            )
        dout = dout.reshape(x.shape[0], n_out)
        x = v.as_float(x, f"{name}.x", dtype)
        x_shape = v.as_shape(x_shape, x.size, f"{name}.original_x_shape") if compute_dx \
            else None
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
        # what backward needs, in one attribute: it reads the y and targets of one forward,
        # unless the public y or t were replaced since (then it reads those, as the book does)
        self._targets = (kind, t_res, y, self.y, t)
        self.loss = dtype.type(loss)
        return self.loss

    def backward(self, dout=1):
        cache = self._targets
        _require_forward(self, cache)
        kind, t, y, public_y, public_t = cache
        dout = v.check_finite_scalar(dout, "dout")
        if self.y is not public_y or self.t is not public_t:
            # the book's backward reads self.y and self.t: resolve them as forward does
            _require_forward(self, self.y, "y")
            y, t = v.as_plain(self.y, "SoftmaxWithLoss.y"), v.as_plain(self.t, "SoftmaxWithLoss.t")
            try:
                y, kind, t, _ = v.as_scores_and_targets(y, t, "SoftmaxWithLoss.y")
            except (TypeError, ValueError) as exc:
                raise type(exc)(f"SoftmaxWithLoss.y {np.shape(y)} and SoftmaxWithLoss.t "
                                f"{np.shape(t)} (replaced after forward()?): {exc}") from None
        elif kind == "labels" and _loss.first_bad_label(t, y.shape[1]) >= 0:
            # the caller's label array, changed in place since forward: re-checked
            t = v.as_labels(t, *y.shape, "SoftmaxWithLoss.t")
        dx = np.empty_like(y)
        _loss.softmax_xent_backward(y, t, kind == "labels", dx, dout)
        return dx.reshape(np.shape(v.as_plain(self.y, "y")))


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
        y, t = self.y, self.t  # the public attributes, which the book's backward reads
        _require_forward(self, y, "y")
        dout = v.check_finite_scalar(dout, "dout")
        dtype = v.compute_dtype(("SigmoidWithLoss.y", y), ("SigmoidWithLoss.t", t))
        y = v.as_float(y, "SigmoidWithLoss.y", dtype)
        t = v.as_float(t, "SigmoidWithLoss.t", dtype)
        v.check_same_shape(t, "SigmoidWithLoss.t", y, "SigmoidWithLoss.y")
        batch_size = y.shape[0] if y.ndim else 1
        return (y - t) * dout / batch_size


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
        mask = v.as_plain(self.mask, "Dropout.mask")  # read once: the array that is checked
        _require_forward(self, mask, "mask")
        if getattr(mask, "dtype", None) != np.bool_:
            # a replaced mask of numbers scales the gradient, as the book's dout * mask does
            dtype = v.compute_dtype(("dout", dout), ("Dropout.mask", mask))
            mask = v.as_float(mask, "Dropout.mask", dtype)
            dout = v.as_float(dout, "dout", dtype)
            v.check_same_shape(dout, "dout", mask, "Dropout.mask")
            return dout * mask
        mask = np.asarray(mask, order="C")  # keeps 0-d, unlike ascontiguousarray
        dout = v.as_float(dout, "dout")
        v.check_same_shape(dout, "dout", mask, "Dropout.mask")
        dx = np.empty_like(dout)
        _normalization.mask_multiply(dout, mask, dx)
        return dx


def _as_statistic(stat, d, name):
    """A running statistic as a new float64 (d,) array (the book rebinds a new array at every
    training step too, so the caller's array is never modified)."""
    stat = np.array(v.as_float(stat, name, np.dtype(np.float64)), copy=True)
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
        self._train = None  # the last training forward's (xn, std, 1 / std, input shape)
        self._xc = _UNSET  # xc, when a caller assigned it

    def keep_training_cache(self, xn, std, inv_std, input_shape):
        """Hold a training pass's ``xn`` (N, D), ``std`` and ``1 / std`` (D,) for backward
        (the layer's own forward, or a network's compiled pass that ran it)."""
        self.batch_size, self.xn, self.std, self.input_shape = xn.shape[0], xn, std, input_shape
        self._train, self._xc = (xn, std, inv_std, tuple(input_shape)), _UNSET

    @property
    def xc(self):
        """x - mean of the last training batch (recomputed as xn * std, unless assigned)."""
        if self._xc is not _UNSET:
            return self._xc
        return None if self._train is None else self._train[0] * self._train[1]

    @xc.setter
    def xc(self, value):
        self._xc = value

    def _batch(self, x, gamma, beta):
        """(x as C-contiguous (N, D), gamma, beta as (D,) arrays of the compute dtype)."""
        x, gamma, beta = v.as_plain(x, "x"), v.as_plain(gamma, "gamma"), v.as_plain(beta, "beta")
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
        x = v.as_plain(x, "x")
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
            self.keep_training_cache(xn, std, inv_std, np.shape(x))
        else:
            _normalization.batchnorm_forward_test(x2, gamma, beta, running_mean, running_var,
                                                  np.empty(d), out)
        return out.reshape(np.shape(x))

    def backward(self, dout):
        if self._train is None:
            raise ValueError("BatchNormalization.backward() called before a training-mode "
                             "forward()")
        xn0, std0, inv_std, shape0 = self._train
        n, d = xn0.shape
        # the public attributes the book's backward reads, which a caller may have replaced
        xn, std, xc = (v.as_plain(a, f"BatchNormalization.{name}") for a, name in
                       ((self.xn, "xn"), (self.std, "std"), (self._xc, "xc")))
        gamma, batch_size = v.as_plain(self.gamma, "gamma"), self.batch_size
        shape = v.as_shape(self.input_shape, n * d, "BatchNormalization.input_shape")
        if np.shape(dout) not in (shape0, (n, d)):
            raise ValueError(f"dout must have shape {shape0} (the forward input's), got "
                             f"{np.shape(dout)}")
        if np.shape(gamma) != (d,):
            raise ValueError(f"gamma must have shape ({d},) as in forward(), got "
                             f"{np.shape(gamma)}")
        book = xn is not xn0 or std is not std0 or xc is not _UNSET or not (
            isinstance(batch_size, (int, np.integer)) and batch_size == n)
        cached = [("BatchNormalization.xn", xn)] + [
            (f"BatchNormalization.{name}", a) for name, a in (("std", std), ("xc", xc))
            if book and a is not _UNSET]
        dtype = v.compute_dtype(("dout", dout), ("gamma", gamma), *cached)
        dout2 = v.as_float(dout, "dout", dtype).reshape(n, d)
        gamma = v.as_float(gamma, "gamma", dtype)
        xn = v.as_float(xn, "BatchNormalization.xn", dtype)
        v.check_shape(xn, (n, d), "BatchNormalization.xn", " (the forward's batch)")
        if book:
            dx, dgamma, dbeta = self._book_backward(dout2, xn, std, xc, gamma, batch_size,
                                                    dtype)
        else:
            dx = np.empty((n, d), dtype=dtype)
            dgamma, dbeta = np.empty(d, dtype=dtype), np.empty(d, dtype=dtype)
            _normalization.batchnorm_backward(dout2, xn, gamma, inv_std, dx, dgamma, dbeta,
                                              np.empty(2 * d))
        self.dgamma, self.dbeta = dgamma, dbeta
        return dx.reshape(shape)

    def _book_backward(self, dout, xn, std, xc, gamma, batch_size, dtype):
        """The book's backward on replaced ``xn``/``std``/``xc``/``batch_size`` (which the
        fused kernel cannot take: it derives them all from one forward): the twin's code."""
        from fastnn.reference.normalization import BatchNormalization as Book
        n, d = dout.shape
        batch_size = v.check_finite_scalar(batch_size, "BatchNormalization.batch_size")
        if batch_size == 0:
            raise ValueError("BatchNormalization.batch_size must not be 0 (backward divides "
                             "by it)")
        _require_forward(self, std, "std")
        std = v.as_float(std, "BatchNormalization.std", dtype)
        v.check_shape(std, (d,), "BatchNormalization.std", " (one per feature)")
        if xc is _UNSET:
            xc = self.xc
        _require_forward(self, xc, "xc")
        xc = v.as_float(xc, "BatchNormalization.xc", dtype)
        v.check_shape(xc, (n, d), "BatchNormalization.xc", " (the forward's batch)")
        book = Book(gamma, None)
        book.xn, book.std, book.xc, book.batch_size, book.input_shape = xn, std, xc, \
            batch_size, (n, d)
        with np.errstate(all="ignore"):
            dx = book.backward(dout)
        return (np.asarray(dx, dtype=dtype), np.asarray(book.dgamma, dtype=dtype),
                np.asarray(book.dbeta, dtype=dtype))

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
        self._forward = None  # (x, W, stride, pad) of the last forward: what backward reads
        self._col = self._col_W = _UNSET  # col and col_W, when a caller assigned them

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
        """The book's ``im2col`` of the last forward input (built on request, unless
        assigned: then backward takes dW from it, as the book's does)."""
        if self._col is not _UNSET or self._forward is None:
            return None if self._col is _UNSET else self._col
        from fastnn.util import im2col
        x, W, stride, pad = self._forward
        return im2col(x, W.shape[2], W.shape[3], stride, pad)

    @col.setter
    def col(self, value):
        self._col = value

    @property
    def col_W(self):
        """The book's ``W.reshape(FN, -1).T`` of the last forward's W (unless assigned: then
        backward takes dx from it, as the book's does)."""
        if self._col_W is not _UNSET:
            return self._col_W
        W = v.as_plain(self.W if self._forward is None else self._forward[1], "W")
        return np.reshape(W, (W.shape[0], -1)).T

    @col_W.setter
    def col_W(self, value):
        self._col_W = value

    def forward(self, x):
        W, b = self.W, self.b  # read once: the kernel must get the arrays that were checked
        stride, pad = v.check_window(self.stride, self.pad, "Convolution")
        v.check_filters(W, b)
        W_held = W
        W = v.as_plain(W, "W")
        dtype = v.compute_dtype(("x", x), ("W", W), *v.bias_dtype(b))
        x = v.as_images(x, "x", dtype)
        v.check_filters(W, b, x.shape)
        OH, OW = v.window_output_size(x.shape, W.shape[2:], stride, pad, "x", "the filter W")
        W = v.as_float(W, "W", dtype)
        b = v.as_bias(b, W.shape[0], dtype)
        out = np.empty((x.shape[0], W.shape[0], OH, OW), dtype=dtype)
        if out.size:
            with threads.for_work(self._gemm_size(x, W, stride, pad)):
                _conv.conv_forward(x, W, b, out, stride, pad, False,
                                   self._scratch(x, W, stride, pad))
        self.x = x
        # the book's backward reads the col and col_W its forward built: this x and this W
        # (held, not copied: col_W is a view of W, so in-place updates of W are seen)
        self._forward = (x, W_held, stride, pad)
        self._col = self._col_W = _UNSET
        return out

    def backward(self, dout, compute_dx=True):
        """Set ``dW`` and ``db``; return dx of the forward input's shape.

        ``compute_dx=False`` skips the input gradient and returns None: a network's first
        layer never needs it.
        """
        _require_forward(self, self._forward)
        _require_forward(self, self.x, "x")
        # the book's backward reads the col and col_W of its forward (this x and this W) and
        # only the shapes of the public x and W, which a caller may have replaced since
        x, W, stride, pad = self._forward
        for name, public, held in (("x", self.x, x), ("W", self.W, W)):
            now = np.shape(v.as_plain(public, f"Convolution.{name}"))
            used = np.shape(v.as_plain(held, name))  # a subclass's own .shape may lie
            if now != used:
                raise ValueError(
                    f"Convolution.{name} was replaced after forward() by one of shape {now}; "
                    f"forward() used {used}: call forward() again")
        if (v.check_window(self.stride, self.pad, "Convolution") != (stride, pad)):
            raise ValueError(f"Convolution.stride, pad changed from {(stride, pad)} to "
                             f"{(self.stride, self.pad)} after forward(): call forward() again")
        W = v.as_plain(W, "W")
        OH, OW = v.window_output_size(x.shape, W.shape[2:], stride, pad, "x", "the filter W")
        dtype = v.compute_dtype(("dout", dout), ("x", x), ("W", W))
        dout = v.as_float(dout, "dout", dtype)
        v.check_shape(dout, (x.shape[0], W.shape[0], OH, OW), "dout",
                      f" (the forward's output for Convolution.x {x.shape}, W {W.shape})")
        if self._col is not _UNSET or self._col_W is not _UNSET:
            return self._book_backward(dout, x, W, stride, pad, compute_dx)
        x = v.as_float(x, "Convolution.x", dtype)
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

    def _book_backward(self, dout, x, W, stride, pad, compute_dx):
        """The book's backward with an assigned ``col`` or ``col_W`` (which the compiled
        kernels never build): the twin's code on the checked arrays."""
        from fastnn.reference.conv import Convolution as Book
        FN, C, FH, FW = W.shape
        col, col_W = self.col, self.col_W
        _require_forward(self, col, "col")
        _require_forward(self, col_W, "col_W")
        dtype = v.compute_dtype(("dout", dout), ("Convolution.col", col),
                                ("Convolution.col_W", col_W))
        col = v.as_float(col, "Convolution.col", dtype)
        col_W = v.as_float(col_W, "Convolution.col_W", dtype)
        rows = dout.shape[0] * dout.shape[2] * dout.shape[3]
        v.check_shape(col, (rows, C * FH * FW), "Convolution.col",
                      f" (im2col of x {x.shape} for W {W.shape})")
        v.check_shape(col_W, (C * FH * FW, FN), "Convolution.col_W", f" (W {W.shape} as columns)")
        book = Book(W, None, stride, pad)
        book.x, book.col, book.col_W = x, col, col_W
        with np.errstate(all="ignore"):
            dx = book.backward(v.as_float(dout, "dout", dtype))
        self.dW, self.db = book.dW, book.db
        return dx if compute_dx else None


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
        self._arg_max = _UNSET  # arg_max, when a caller assigned it

    @property
    def arg_max(self):
        """The book's ``arg_max``: window indices ky * pool_w + kx, rows (n, oh, ow, c)
        (computed on request from the kernel's layout, unless assigned: then backward
        routes the gradient by it, as the book's does)."""
        if self._arg_max is not _UNSET:
            return self._arg_max
        a = self._argmax
        return None if a is None else a.transpose(0, 2, 3, 1).reshape(-1).astype(np.intp)

    @arg_max.setter
    def arg_max(self, value):
        self._arg_max = value

    def _assigned_argmax(self, shape, pool_size):
        """The assigned ``arg_max`` in the kernel's (N, C, OH, OW) int32 layout."""
        a = self._arg_max
        _require_forward(self, a, "arg_max")
        a = np.asarray(v.as_plain(a, "Pooling.arg_max"))
        if a.dtype.kind not in "iu":
            raise TypeError(f"Pooling.arg_max must hold integer window indices, got dtype "
                            f"{a.dtype}")
        N, C, OH, OW = shape
        if a.size != N * C * OH * OW:
            raise ValueError(f"Pooling.arg_max must hold {N * C * OH * OW} window indices "
                             f"(one per output of shape {shape}), got shape {a.shape}")
        if a.size and (a.min() < 0 or a.max() >= pool_size):
            raise ValueError(f"Pooling.arg_max holds indices outside the window's "
                             f"[0, {pool_size - 1}]")
        return np.ascontiguousarray(
            a.reshape(N, OH, OW, C).transpose(0, 3, 1, 2), dtype=np.int32)

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
        self._argmax, self._arg_max = argmax, _UNSET
        self._window, self._input_shape = (ph, pw, stride, pad), x.shape
        return out

    def backward(self, dout):
        argmax = self._argmax
        _require_forward(self, argmax)
        _require_forward(self, self.x, "x")
        ph, pw, stride, pad = self._window  # the window of the forward that made argmax
        if (ph, pw, stride, pad) != (self.pool_h, self.pool_w, self.stride, self.pad):
            raise ValueError(f"Pooling.pool_h, pool_w, stride, pad changed from "
                             f"{(ph, pw, stride, pad)} after forward(): call forward() again")
        shape = np.shape(v.as_plain(self.x, "Pooling.x"))  # the book reads only x's shape
        if shape != self._input_shape:
            raise ValueError(f"Pooling.x was replaced after forward() by one of shape {shape}; "
                             f"forward() saw {self._input_shape}: call forward() again")
        if self._arg_max is not _UNSET:
            argmax = self._assigned_argmax(argmax.shape, ph * pw)
        dtype = v.compute_dtype(("dout", dout))
        dout = v.as_float(dout, "dout", dtype)
        v.check_shape(dout, argmax.shape, "dout", " (the forward output's)")
        dx = np.empty(shape, dtype=dtype)
        if dout.size and dx.size:
            _conv.maxpool_backward(dout, argmax, dx, ph, pw, stride, pad)
        else:
            dx.fill(0)
        return dx
