"""Numerical differentiation, gradient descent and gradient checks.

The book's ``common/gradient.py`` (``numerical_gradient``, ``numerical_gradient_2d``), its
chapter-4 ``numerical_diff`` and ``gradient_descent``, and chapter 5's ``gradient_check.py``
(:func:`gradient_check`; the command ``fastnn gradcheck`` lives with the other commands, in
:mod:`fastnn.__main__`).  Replace ``from common.gradient import numerical_gradient`` by
``from fastnn.gradient import numerical_gradient``.

Two additions do the same work faster:

* :func:`numerical_gradient_batched` evaluates all 2 * x.size perturbed points of a function
  that takes a stack of points in one call (or a few, bounding memory);
* :func:`network_numerical_gradient` is the numerical gradient of a whole network
  (``TwoLayerNet`` / ``MultiLayerNet``), every parameter perturbed alone as in the book's
  brute force, swept in compiled code from one cached forward pass
  (:mod:`fastnn._kernels._numgrad`).

Twins: :mod:`fastnn.reference.gradient`.
"""
from typing import NamedTuple

import numpy as np

from fastnn import _validation as v
from fastnn import _numgrad_sweep
from fastnn._kernels import _numgrad
from fastnn.functions import one_hot

__all__ = [
    "numerical_diff", "numerical_gradient", "numerical_gradient_2d",
    "numerical_gradient_batched", "gradient_descent", "network_numerical_gradient",
    "GradientDifference", "gradient_check",
]

# numerical_gradient_batched's default chunks hold at most this many elements of points
_BATCHED_DEFAULT_ELEMENTS = 1 << 24


def _check_h(h):
    return v.check_finite_scalar(h, "h", positive=True)


def _check_perturbable_dtype(dtype, name):
    if dtype.kind != "f" or dtype.itemsize > 8:
        raise TypeError(
            f"{name} has dtype {dtype}: the numerical gradient moves its entries by h = 1e-4, "
            f"which needs a float16/32/64 array (pass {name}.astype(float))"
        )


def _check_perturbable(x, name="x"):
    """``x`` must be a writeable floating NumPy array: it is perturbed in place."""
    if not isinstance(x, np.ndarray):
        raise TypeError(
            f"{name} must be a NumPy array (it is perturbed in place and restored), "
            f"got {type(x).__name__}"
        )
    _check_perturbable_dtype(x.dtype, name)
    if not x.flags.writeable:
        raise ValueError(f"{name} must be writeable: it is perturbed in place and restored")


def numerical_diff(f, x, h=1e-4, method="central"):
    """The derivative of ``f`` at ``x`` by a finite difference.

    Parameters
    ----------
    f : callable
        f(x) -> number (or array of x's shape, for elementwise functions).
    x : float or ndarray
    h : float, finite, > 0
    method : {'central', 'forward'}
        'central': (f(x + h) - f(x - h)) / 2h, error O(h^2) (the book's choice);
        'forward': (f(x + h) - f(x)) / h, error O(h).

    Twin: :func:`fastnn.reference.gradient.numerical_diff`.
    """
    h = _check_h(h)
    if method == "central":
        return (f(x + h) - f(x - h)) / (2 * h)
    if method == "forward":
        return (f(x + h) - f(x)) / h
    raise ValueError(f"method must be 'central' or 'forward', got {method!r}")


def numerical_gradient(f, x, h=1e-4):
    """The gradient of ``f`` at ``x`` by central differences, one entry at a time.

    As the book's: each entry is set to ``float(x[idx]) + h``, then to ``x[idx] - h``
    (in x's dtype), ``f(x)`` is called with the array itself, and the entry is restored.

    Parameters
    ----------
    f : callable
        f(x) -> scalar; it sees ``x`` perturbed in place.
    x : ndarray of float16, float32 or float64, any shape, writeable
        Restored bit for bit afterwards, also when ``f`` raises.
    h : float, finite, > 0

    Returns
    -------
    ndarray of x's shape and dtype: (f(x + h e_idx) - f(x - h e_idx)) / 2h.

    Raises
    ------
    TypeError
        If ``x`` is not a NumPy array of a float dtype (an integer array cannot hold x + h).

    Twin: :func:`fastnn.reference.gradient.numerical_gradient`.
    """
    h = _check_h(h)
    _check_perturbable(x)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        tmp_val = x[idx]
        try:
            x[idx] = float(tmp_val) + h
            fxh1 = f(x)
            x[idx] = tmp_val - h
            fxh2 = f(x)
        finally:
            x[idx] = tmp_val
        grad[idx] = (fxh1 - fxh2) / (2 * h)
    return grad


def numerical_gradient_2d(f, X, h=1e-4):
    """The book's ``gradient_2d.numerical_gradient``: one gradient per row of ``X``.

    ``f`` takes one point (a row, perturbed in place); a 1-D ``X`` is a single point.

    Returns
    -------
    ndarray of X's shape and dtype; row i is numerical_gradient(f, X[i], h).

    Twin: :func:`fastnn.reference.gradient.numerical_gradient_2d`.
    """
    h = _check_h(h)
    _check_perturbable(X, "X")
    if X.ndim == 1:
        return numerical_gradient(f, X, h)
    if X.ndim != 2:
        raise ValueError(f"X must be 1-D (one point) or 2-D (one point per row), got {X.shape}")
    grad = np.zeros_like(X)
    for idx, x in enumerate(X):
        grad[idx] = numerical_gradient(f, x, h)
    return grad


def numerical_gradient_batched(f, x, h=1e-4, chunk_size=None):
    """:func:`numerical_gradient` for an ``f`` that evaluates a stack of points at once.

    The 2 * x.size perturbed points (each entry moved as the book moves it) are stacked and
    ``f`` is called once per chunk of entries instead of twice per entry.

    Parameters
    ----------
    f : callable
        f(P) -> array of shape (m,) for points P of shape (m,) + x.shape.
    x : array_like of float16, float32 or float64
        Not modified.
    h : float, finite, > 0
    chunk_size : int, optional
        Entries of ``x`` perturbed per call of ``f`` (2 * chunk_size points, memory
        2 * chunk_size * x.nbytes).  Default: all entries in one call while that holds at
        most 2**24 elements, else chunks of that size.

    Returns
    -------
    ndarray of x's shape and dtype, equal to numerical_gradient(f_one, x, h) when
    ``f(P)[i] == f_one(P[i])``.

    Twin: :func:`fastnn.reference.gradient.numerical_gradient_batched`.
    """
    h = _check_h(h)
    x = np.asarray(v.as_plain(x, "x"))
    _check_perturbable_dtype(x.dtype, "x")
    size = x.size
    if chunk_size is None:
        chunk_size = max(1, _BATCHED_DEFAULT_ELEMENTS // max(2 * size, 1))
    else:
        chunk_size = v.check_count(chunk_size, "chunk_size")
    flat = x.reshape(-1)
    grad = np.empty(size, dtype=x.dtype)
    for start in range(0, size, int(chunk_size)):
        idx = np.arange(start, min(start + int(chunk_size), size))
        m = idx.size
        points = np.repeat(flat[np.newaxis], 2 * m, axis=0)
        # the book's two stores: float(p) + h rounded to x's dtype, and p - h in x's dtype
        points[np.arange(m), idx] = (flat[idx].astype(np.float64) + h).astype(x.dtype)
        points[m + np.arange(m), idx] = flat[idx] - x.dtype.type(h)
        values = np.asarray(f(points.reshape((2 * m,) + x.shape)))
        if values.shape != (2 * m,):
            raise ValueError(
                f"f must return one value per point: {2 * m} points gave shape {values.shape}"
            )
        grad[start:start + m] = (values[:m] - values[m:]) / (2 * h)
    return grad.reshape(x.shape)


def gradient_descent(f, init_x, lr=0.01, step_num=100, return_path=False):
    """Minimise ``f`` by ``step_num`` steps x <- x - lr * numerical_gradient(f, x).

    Parameters
    ----------
    f : callable
        f(x) -> scalar.
    init_x : array_like
        Starting point; not modified (integers start as float64).
    lr : float, finite, > 0
    step_num : int >= 0
    return_path : bool
        Also return every point visited.

    Returns
    -------
    x : ndarray of init_x's shape
    path : ndarray of shape (step_num + 1,) + x.shape, only with ``return_path``
        path[0] is init_x, path[-1] is x.

    Twin: :func:`fastnn.reference.gradient.gradient_descent`.
    """
    lr = v.check_finite_scalar(lr, "lr", positive=True)
    step_num = v.check_count(step_num, "step_num", minimum=0)
    x = np.array(v.as_float(init_x, "init_x"), copy=True)
    path = np.empty((int(step_num) + 1,) + x.shape, dtype=x.dtype) if return_path else None
    for i in range(int(step_num)):
        if return_path:
            path[i] = x
        x -= lr * numerical_gradient(f, x)
    if return_path:
        path[-1] = x
        return x, path
    return x


def _network_targets(t, n, k, single):
    """Targets as float64 rows (n, k): labels become one-hot rows."""
    t = np.asarray(v.as_plain(t, "t"))
    if single and t.shape == (k,):
        t = t.reshape(1, k)
    labels, t = v.resolve_targets(t, (n, k), np.float64)
    return one_hot(t, k) if labels else t


def network_numerical_gradient(weights, biases, x, t, activation="relu", exact_loss=False,
                               weight_decay_lambda=0.0, h=1e-4):
    """The book's numerical gradient of a network's loss, for every weight and bias.

    The network is ``MultiLayerNet`` / ``TwoLayerNet``: a_0 = x, z_l = a_{l-1} @ W_l + b_l,
    a_l = act(z_l) for l < L, and the loss

        L = mean_r CE(softmax(z_L[r]), t[r]) + 0.5 * weight_decay_lambda * sum_l sum W_l**2

    with CE = -sum_c t_c log(y_c + 1e-7) (the book's) or the exact log-softmax form.  Every
    parameter p is perturbed alone as the book's brute force does (``float(p) + h`` and
    ``p - h`` stored in p's dtype), and ``(L(p + h) - L(p - h)) / 2h`` computed in compiled
    code from one cached forward pass: a perturbation of W_l[i, j] moves only unit j of
    layer l, and only in rows where a_{l-1}[r, i] != 0, so only those rows' loss changes
    are computed (see :mod:`fastnn._kernels._numgrad`).  The arithmetic is float64 for
    float32 networks too, so the result is the book's finite difference with less rounding
    (the book's float32 loss carries ~1e-3 of noise into each entry at h = 1e-4).

    Parameters
    ----------
    weights : sequence of L arrays (d_{l-1}, d_l), float32 or float64
        The book's Affine layout.
    biases : sequence of L arrays (d_l,), float32 or float64
    x : array_like, (n, d_0), or (d_0,) for one sample, or (n, ...) flattened to (n, d_0)
    t : array_like
        Integer labels (n,) or targets (n, k) (one-hot or soft), k = d_L.
    activation : {'relu', 'sigmoid', 'identity'}
        After every layer except the last.
    exact_loss : bool
    weight_decay_lambda : float
    h : float, finite, > 0

    Returns
    -------
    dWs, dbs : lists of arrays, the shapes and dtypes of ``weights`` and ``biases``.

    Twin: :func:`fastnn.reference.gradient.network_numerical_gradient`.
    """
    h = _check_h(h)
    lam = v.check_finite_scalar(weight_decay_lambda, "weight_decay_lambda")
    if activation not in _numgrad.ACTIVATION_CODES:
        raise ValueError(
            f"activation must be one of {sorted(_numgrad.ACTIVATION_CODES)}, got {activation!r}"
        )
    weights = [np.asarray(v.as_plain(W, f"W{l}")) for l, W in enumerate(weights, 1)]
    biases = [np.asarray(v.as_plain(b, f"b{l}")) for l, b in enumerate(biases, 1)]
    if not weights or len(weights) != len(biases):
        raise ValueError(
            f"need one bias per weight matrix and at least one layer, got {len(weights)} "
            f"weights and {len(biases)} biases"
        )
    width = None
    for l, (W, b) in enumerate(zip(weights, biases), start=1):
        for name, p in ((f"W{l}", W), (f"b{l}", b)):
            if p.dtype not in v.FLOAT_DTYPES:
                raise TypeError(
                    f"{name} has dtype {p.dtype}; parameters must be float32 or float64")
        if W.ndim != 2 or min(W.shape) < 1 or (width is not None and W.shape[0] != width):
            expected = "(in, out)" if width is None else f"({width}, out)"
            raise ValueError(
                f"W{l} must be a non-empty 2-D array of shape {expected}, got {W.shape}")
        v.check_shape(b, (W.shape[1],), f"b{l}")
        width = W.shape[1]

    v.compute_dtype(("x", x))  # refuses complex, object and string inputs
    if np.ndim(x) >= 2 and np.shape(x)[0] == 0:
        raise ValueError(f"x is an empty batch, shape {np.shape(x)}: the mean loss is undefined")
    x64, single = v.as_batch(x, "x", np.float64)
    if x64.shape[1] != weights[0].shape[0]:
        raise ValueError(
            f"x has {x64.shape[1]} features per sample, W1 expects {weights[0].shape[0]}"
        )
    t64 = _network_targets(t, x64.shape[0], width, single)

    params = weights + biases
    steps = []
    for p in params:
        plus, minus = np.empty(p.shape), np.empty(p.shape)
        _numgrad.perturbation_steps(np.ascontiguousarray(p), h, plus, minus)
        steps.append((plus, minus))
    L = len(weights)
    p64 = [np.ascontiguousarray(p, dtype=np.float64) for p in params]
    grads = [np.empty(p.shape) for p in params]
    _numgrad_sweep.network_sweep(
        p64[:L], p64[L:], [s[0] for s in steps[:L]], [s[1] for s in steps[:L]],
        [s[0] for s in steps[L:]], [s[1] for s in steps[L:]], x64, t64,
        activation, bool(exact_loss), h, lam, grads[:L], grads[L:],
    )
    grads = [g.astype(p.dtype, copy=False) for g, p in zip(grads, params)]
    return grads[:L], grads[L:]


class GradientDifference(NamedTuple):
    """How far backprop is from the numerical gradient for one parameter."""

    mean_abs: float  # mean |backprop - numerical|, the figure the book prints
    max_abs: float   # largest |backprop - numerical|
    max_rel: float   # max_abs / the largest |entry| of either gradient (0 if both are 0)


def gradient_check(network, x, t):
    """Compare ``network.gradient(x, t)`` (backprop) with ``network.numerical_gradient(x, t)``.

    Parameters
    ----------
    network : object
        With ``gradient(x, t)`` and ``numerical_gradient(x, t)`` returning dicts of arrays
        with the same keys ('W1', 'b1', ...), such as ``fastnn.nets.TwoLayerNet``.
    x, t : array_like
        A batch and its targets.

    Returns
    -------
    dict of str -> GradientDifference, in the numerical gradient's key order.
    """
    numerical = network.numerical_gradient(x, t)
    backprop = network.gradient(x, t)
    if set(numerical) != set(backprop):
        raise ValueError(
            f"gradient() and numerical_gradient() disagree on the parameters: "
            f"{sorted(backprop)} vs {sorted(numerical)}"
        )
    result = {}
    for key, num in numerical.items():
        a = np.asarray(backprop[key], dtype=np.float64)
        b = np.asarray(num, dtype=np.float64)
        v.check_shape(a, b.shape, f"backprop gradient of {key}")
        if b.size == 0:
            result[key] = GradientDifference(0.0, 0.0, 0.0)
            continue
        diff = np.abs(a - b)
        max_abs = float(diff.max())
        scale = max(float(np.max(np.abs(a))), float(np.max(np.abs(b))))
        result[key] = GradientDifference(float(diff.mean()), max_abs,
                                         max_abs / scale if scale > 0 else 0.0)
    return result
