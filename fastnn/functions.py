"""The book's ``common/functions.py``, validated and dispatched to compiled kernels.

Replace ``from common.functions import ...`` by ``from fastnn.functions import ...``.
Each function names its twin in :mod:`fastnn.reference.functions`.  Results follow NumPy's
promotion of the inputs, except that integer and bool inputs give float64 (see
:mod:`fastnn._validation`).
"""
import numpy as np

from fastnn import _validation as v
from fastnn._kernels import _activations, _bf16, _loss

__all__ = [
    "identity_function", "step_function", "sigmoid", "sigmoid_grad", "relu", "relu_grad",
    "softmax", "sum_squared_error", "mean_squared_error", "cross_entropy_error",
    "softmax_loss", "softmax_loss_grad", "one_hot", "binary_cross_entropy", "round_bf16",
]


def identity_function(x):
    """Return ``x`` unchanged (the output activation of regression)."""
    return x


def step_function(x):
    """1 where ``x > 0``, else 0, as a NumPy int array."""
    return np.asarray(np.asarray(x) > 0, dtype=int)


def sigmoid(x):
    """1 / (1 + exp(-x)), elementwise, without overflow for any finite ``x``.

    Twin: :func:`fastnn.reference.functions.sigmoid`.
    """
    x = v.as_float(x, "x")
    out = np.empty_like(x)
    _activations.sigmoid_forward(x, out)
    return out[()]  # a NumPy scalar for a scalar x, as a ufunc returns


def sigmoid_grad(x):
    """d sigmoid / dx = (1 - sigmoid(x)) * sigmoid(x).

    Twin: :func:`fastnn.reference.functions.sigmoid_grad`.
    """
    s = sigmoid(x)
    return (1.0 - s) * s


def relu(x):
    """max(0, x), elementwise (NaN propagates).  Twin: :func:`fastnn.reference.functions.relu`."""
    x = v.as_float(x, "x")
    return np.maximum(x, 0)


def relu_grad(x):
    """1 where ``x >= 0``, else 0 (the book's convention at 0).

    Twin: :func:`fastnn.reference.functions.relu_grad`.
    """
    x = v.as_float(x, "x")
    return (x >= 0).astype(x.dtype)


def _rows(x, name):
    """``x`` as C-contiguous float rows over its last axis, for softmax-like kernels."""
    x = v.as_float(x, name)
    if x.ndim == 0:
        raise ValueError(f"{name} must have at least one dimension (the classes), got a scalar")
    return x, x.reshape(-1, x.shape[-1]) if x.shape[-1] else x.reshape(x.size, 0)


def softmax(x):
    """exp(x) / sum(exp(x)) over the last axis, computed after subtracting the row max.

    Parameters
    ----------
    x : array_like, shape (..., k)

    Returns
    -------
    ndarray of the same shape, each row summing to 1.

    Twin: :func:`fastnn.reference.functions.softmax`.
    """
    x, rows = _rows(x, "x")
    out = np.empty_like(x)
    _loss.softmax_forward(rows, out.reshape(rows.shape))
    return out


def sum_squared_error(y, t):
    """0.5 * sum((y - t)**2) over all elements (the book's "mean squared error").

    ``y`` and ``t`` must have the same shape: NumPy would broadcast a ``(n,)`` against a
    ``(n, 1)`` into an ``(n, n)`` matrix and return a wrong number.

    Twin: :func:`fastnn.reference.functions.sum_squared_error`.
    """
    dtype = v.compute_dtype(("y", y), ("t", t))
    y, t = v.as_float(y, "y", dtype), v.as_float(t, "t", dtype)
    v.check_shape(t, y.shape, "t")
    d = (y - t).reshape(-1)
    return dtype.type(0.5 * np.dot(d, d))


mean_squared_error = sum_squared_error


def cross_entropy_error(y, t, exact=False):
    """The book's cross-entropy: -sum(t * log(y + 1e-7)) / batch.

    Parameters
    ----------
    y : array_like, shape (k,) or (n, k)
        Probabilities (softmax outputs); with ``exact=True``, logits instead.
    t : array_like
        One-hot (or soft) targets of ``y``'s shape, or integer labels of shape (n,) or (n, 1).
    exact : bool
        Compute the exact log-softmax loss ``-sum t * log_softmax(y)`` from logits ``y``,
        without the book's 1e-7.

    Twin: :func:`fastnn.reference.functions.cross_entropy_error`.
    """
    y, kind, t, dtype = v.as_scores_and_targets(y, t)
    if exact:
        loss = fused_softmax_loss(y, kind, t, exact=True)[1]
    else:
        loss = _loss.xent(y, t, kind == "labels", np.empty(y.shape[0]))
    return dtype.type(loss)


def fused_softmax_loss(x, kind, t, exact=False):
    """softmax(x) and the mean cross-entropy in one compiled pass, on validated input.

    ``x``, ``kind`` and ``t`` as returned by ``_validation.as_scores_and_targets``.
    Returns ``(y, loss)`` with ``loss`` a Python float.
    """
    y = np.empty_like(x)
    row_loss = np.empty(x.shape[0])
    loss = _loss.softmax_xent_forward(x, t, kind == "labels", y, row_loss, exact)
    return y, loss


def softmax_loss(X, t, exact=False):
    """cross_entropy_error(softmax(X), t) in one fused pass over the logits ``X``.

    Twin: :func:`fastnn.reference.functions.softmax_loss`.
    """
    x, kind, t, dtype = v.as_scores_and_targets(X, t, "X")
    return dtype.type(fused_softmax_loss(x, kind, t, exact)[1])


def softmax_loss_grad(X, t, exact=False):
    """Softmax-with-loss forward and backward in one compiled pass over the logits.

    Returns ``(loss, dX)``: ``loss`` as :func:`softmax_loss` computes it and
    ``dX = (softmax(X) - t) / N``, what ``SoftmaxWithLoss.backward()`` returns after
    ``forward(X, t)``, with the shape of ``X``.

    Twin: :func:`fastnn.reference.functions.softmax_loss_grad`.
    """
    x, kind, t, dtype = v.as_scores_and_targets(X, t, "X")
    dx = np.empty_like(x)
    loss = _loss.softmax_xent_grad(x, t, kind == "labels", dx, np.empty(x.shape[0]), exact)
    return dtype.type(loss), dx.reshape(np.shape(X))


def one_hot(labels, num_classes=None, dtype=np.float64):
    """One-hot rows for integer ``labels`` of any shape: result shape ``labels.shape + (k,)``.

    ``num_classes`` defaults to ``labels.max() + 1``.  For the binary case (k = 2), column 1
    is the label itself and column 0 its complement, P(y0) = 1 - P(y1).

    Twin: :func:`fastnn.reference.functions.one_hot`.
    """
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    else:
        num_classes = v.check_count(num_classes, "num_classes", minimum=0)
    flat = v.as_labels(labels.reshape(-1), labels.size, num_classes, "labels")
    out = np.zeros((flat.size, num_classes), dtype=dtype)
    out[np.arange(flat.size), flat] = 1
    return out.reshape(labels.shape + (num_classes,))


def binary_cross_entropy(y, t, from_logits=False):
    """Binary cross-entropy averaged over the batch (first axis).

    ``y`` is P(class 1) (a sigmoid output, P(class 0) = 1 - y), with the book's 1e-7 inside
    both logs; with ``from_logits=True``, ``y`` holds logits z and the loss is computed as
    max(z, 0) - z t + log(1 + exp(-|z|)), finite for logits of any magnitude.
    ``t`` holds 0/1 targets (or probabilities) of ``y``'s shape.

    Twin: :func:`fastnn.reference.functions.binary_cross_entropy`.
    """
    dtype = v.compute_dtype(("y", y), ("t", t))
    y, t = v.as_float(y, "y", dtype), v.as_float(t, "t", dtype)
    v.check_shape(t, y.shape, "t")
    batch_size = y.shape[0] if y.ndim else 1
    if batch_size == 0:
        raise ValueError(f"y is an empty batch, shape {y.shape}: the mean loss is undefined")
    if from_logits:
        loss = np.maximum(y, 0) - y * t + np.log1p(np.exp(-np.abs(y)))
    else:
        loss = -(t * np.log(y + 1e-7) + (1 - t) * np.log(1 - y + 1e-7))
    return dtype.type(np.sum(loss) / batch_size)


def round_bf16(x):
    """The nearest bfloat16 of every element of a float32 ``x`` (round to nearest, ties to
    even), returned as float32 (the low 16 bits zero): what ``precision="bf16"`` networks do
    to the operands of their GEMMs.  NaN stays NaN (quieted), inf stays inf, and values
    beyond bfloat16's largest (about 3.39e38) round to inf, as IEEE rounding gives.

    Only float32: a float64 would be rounded twice (to float32, then to bfloat16), which is
    not the nearest bfloat16 in every case; cast it first if that is what is wanted.

    Twin: :func:`fastnn.reference.functions.round_bf16`.
    """
    x = np.asarray(x)
    if x.dtype != np.float32:
        raise TypeError(f"x must be float32 (bfloat16 rounds float32 values), got {x.dtype}")
    src = np.ascontiguousarray(x)  # C layout for the kernel
    out = np.empty(x.shape, np.float32)
    _bf16.round_bf16(src, out)
    return out
