"""The book's ``common/optimizer.py``: optimizers that update a network's parameters in place.

Replace ``from common.optimizer import ...`` by ``from fastnn.optim import ...``.  Each class
takes the book's constructor arguments, keeps the book's state attributes (``v``, ``h``, ``m``,
``iter``: dicts of arrays of each parameter's shape and dtype, created at the first update) and
applies the book's formulas, 1e-7 epsilons included.  Its twin of the same name is in
:mod:`fastnn.reference.optim`.

``update(params, grads)`` writes into the very arrays of ``params``, as the book's ``-=`` does,
so the layers holding them see the new values.  A writable, C-contiguous float32 or float64
parameter (every network's) takes one compiled pass (no GIL) over the parameter, its gradient
and its state; after the first update no array is allocated unless a gradient has to be
converted to its parameter's dtype or layout.  The other kinds of parameter that the book's
code updates take the book's NumPy expressions: any other writable float array (strided,
Fortran-ordered, byte-swapped, float16) in place, and a number (a Python float, a NumPy scalar,
as in the book's ``optimizer_compare_naive.py``) by replacing ``params[key]`` with its update,
as the book's ``params[key] -= ...`` rebinds it.
"""
import math
import numbers
from collections.abc import Mapping, MutableMapping

import numpy as np

from fastnn import _validation as v
from fastnn._kernels import _optim

__all__ = ["SGD", "Momentum", "Nesterov", "AdaGrad", "RMSprop", "Adam", "OPTIMIZERS",
           "get_optimizer"]


def _rate(value, name):
    """A learning rate: finite and > 0."""
    return v.check_finite_scalar(value, name, positive=True)


def _fraction(value, name):
    """A decay factor (momentum, decay_rate, beta1, beta2): finite, in [0, 1)."""
    value = v.check_finite_scalar(value, name)
    if not 0 <= value < 1:
        raise ValueError(f"{name} must be in [0, 1), got {value}")
    return value


class _Hyperparameter:
    """A hyper-parameter attribute, checked whenever it is set: by the constructor, and later
    too (a schedule's ``optimizer.lr *= 0.1``), so a bad value fails where it is written."""

    def __init__(self, check):
        self._check = check

    def __set_name__(self, owner, name):
        self._name, self._slot = name, "_" + name

    def __get__(self, obj, objtype=None):
        return self if obj is None else obj.__dict__[self._slot]

    def __set__(self, obj, value):
        obj.__dict__[self._slot] = self._check(value, self._name)


def _param_kind(p, key):
    """How ``params[key]`` is updated, or an error: "kernel" (a writable, C-contiguous, native
    float32/float64 array: in place, by a compiled pass), "array" (any other writable float
    array: in place, by the book's NumPy expressions) or "number" (a Python or NumPy real
    number, or a 0-d value: replaced in ``params`` by its update, as the book's ``-=`` does)."""
    name = f"params[{key!r}]"
    if isinstance(p, np.ndarray):
        v.as_plain(p, name)  # refuses masked entries (which the book's -= would skip)
        if p.dtype.kind != "f" or p.dtype.itemsize > 8:
            raise TypeError(
                f"{name} has dtype {p.dtype}; parameters are updated in place and must be "
                "float16, float32 or float64 arrays (convert them once, before training)"
            )
        if not p.flags.writeable:
            raise ValueError(f"{name} is read-only and cannot be updated in place")
        native = p.dtype in v.FLOAT_DTYPES and p.dtype.isnative
        return "kernel" if native and p.flags.c_contiguous else "array"
    if isinstance(p, numbers.Real) and not isinstance(p, (bool, np.bool_)):
        return "number"
    raise TypeError(f"{name} must be a NumPy array (updated in place) or a real number "
                    f"(replaced by its update, as in the book), got {type(p).__name__}")


def _checked_grad(p, g, key, kind):
    """``grads[key]`` as an array the update of ``params[key]`` (of ``kind``) can take.

    The slow path of :func:`_checked_pairs`: converts a gradient of another dtype or layout
    to its parameter's (one copy), refuses one of another shape.
    """
    name = f"grads[{key!r}]"
    if kind == "number":
        if isinstance(g, numbers.Real) and not isinstance(g, (bool, np.bool_)):
            return g
        g = v.as_float(g, name)
        v.check_shape(g, (), name)
        return g
    g = v.as_float(g, name, p.dtype)
    v.check_shape(g, p.shape, name)
    if np.may_share_memory(g, p):
        # the book reads such a grad through temporaries; the kernels' one pass must not
        g = g.copy()
    return g


def _checked_pairs(params, grads):
    """``[(key, param, grad, kind)]`` in the order of ``params``, every pair ready for its
    update (``kind`` as :func:`_param_kind` names it).

    Everything is checked before any parameter is touched, so a bad entry leaves all unchanged.
    """
    for name, d in (("params", params), ("grads", grads)):
        if not isinstance(d, (dict, Mapping)):  # dict first: the common case, 10x faster
            raise TypeError(f"{name} must be a dict of arrays, got {type(d).__name__}")
    if params.keys() != grads.keys():
        missing = [k for k in params if k not in grads]
        extra = [k for k in grads if k not in params]
        raise ValueError(
            "params and grads must have the same keys: "
            + "; ".join(([f"grads lacks {missing}"] if missing else [])
                        + ([f"grads has extra keys {extra}"] if extra else []))
        )
    ready = _optim.kernel_ready
    pairs = []
    for key, p in params.items():
        g = grads[key]
        # one C-level test accepts the usual case: a training step's grads are fresh
        # C-contiguous arrays of their parameters' dtype and shape
        if type(p) is np.ndarray and type(g) is np.ndarray and ready(p, g):
            # (subclasses take the checked way: a masked array's entries are refused there)
            pairs.append((key, p, g, "kernel"))
            continue
        kind = _param_kind(p, key)
        if kind == "number" and not isinstance(params, MutableMapping):
            raise TypeError(f"params[{key!r}] is a number, replaced by its update, so params "
                            f"must be a mutable dict, got {type(params).__name__}")
        pairs.append((key, p, _checked_grad(p, g, key, kind), kind))
    return pairs


class _Optimizer:
    """The update loop shared by every optimizer: check, create the state, one kernel per key.

    A subclass names its per-parameter state dicts in ``_state_names`` (attributes that are
    ``None`` until the first update, as in the book), its kernel of
    :mod:`fastnn._kernels._optim` in ``_kernel``, and returns the kernel's scalar arguments
    for this step from ``_step_scalars()``, and writes the book's NumPy expressions for one
    key in ``_numpy_update(params, key, grad, *scalars)`` (parameters no kernel takes).
    """

    _state_names = ()
    _kernel = None

    def update(self, params, grads):
        """Update every array of ``params`` in place from the gradient of the same key.

        Parameters
        ----------
        params : dict of ndarray or numbers
            The parameters: writable float16/32/64 arrays, updated in place (compiled when
            C-contiguous float32/float64, every network's case), or real numbers, which are
            replaced in ``params`` by their updated values, as the book's ``-=`` does.
        grads : dict of array_like
            The gradient of each parameter, with the same keys and shapes.  A gradient of
            another dtype or layout is converted to its parameter's once, for this step.

        Raises
        ------
        TypeError, ValueError
            When keys, shapes or dtypes do not fit; then no parameter has been changed.
        """
        pairs = _checked_pairs(params, grads)
        if self._state_names and getattr(self, self._state_names[0]) is None:
            for state in self._state_names:
                # the kernels' state is C-contiguous; elsewhere the book's zeros_like, in
                # floats for an integer number (the book's integer state cannot take AdaGrad's
                # and RMSprop's in-place h += g * g: they raise after updating other keys)
                setattr(self, state, {key: np.zeros(p.shape, p.dtype) if kind == "kernel"
                                      else np.zeros_like(p, dtype=np.result_type(p, 0.0))
                                      for key, p, _, kind in pairs})
        calls = [(key, p, g, kind, self._state_of(key, p, kind)) for key, p, g, kind in pairs]
        scalars = self._step_scalars()
        kernel = self._kernel
        for key, p, g, kind, state in calls:
            if kind == "kernel":
                kernel(p, g, *state, *scalars)
            else:
                self._numpy_update(params, key, g, *scalars)

    def _state_of(self, key, p, kind="kernel"):
        """The state arrays of ``params[key]``, checked against ``p``."""
        arrays = []
        for state in self._state_names:
            s = getattr(self, state).get(key)
            if kind == "kernel":
                fits = _optim.kernel_ready(p, s, True)
            elif kind == "array":
                # (the book's Momentum replaces v by a native-order array of p's type)
                # (of a 0-d p, the book's expressions leave a NumPy scalar of p's dtype)
                fits = (isinstance(s, (np.ndarray, np.generic)) and np.shape(s) == p.shape
                        and s.dtype.newbyteorder("=") == p.dtype.newbyteorder("="))
            else:  # a number's state: 0-d, and a NumPy scalar once the book's update replaced it
                fits = s is not None and np.shape(s) == ()
            if not fits:
                made_for = ("no state" if s is None
                            else f"a state of shape {np.shape(s)} and dtype {np.asarray(s).dtype}")
                raise ValueError(
                    f"params[{key!r}] has shape {np.shape(p)} and dtype {np.asarray(p).dtype}, "
                    f"but the optimizer has {made_for} for it in {state}[{key!r}]; the state "
                    "is created at the first update, so use a new optimizer for other parameters"
                )
            arrays.append(s)
        return arrays

    def __repr__(self):
        names = {}  # the hyper-parameters along the MRO, base classes' first
        for cls in reversed(type(self).__mro__):
            names.update((name, None) for name, attr in vars(cls).items()
                         if isinstance(attr, _Hyperparameter))
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in names)
        return f"{type(self).__name__}({args})"


class SGD(_Optimizer):
    r"""Stochastic gradient descent: :math:`W \leftarrow W - \eta\,\partial L/\partial W`.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta > 0`.

    Notes
    -----
    Twin: :class:`fastnn.reference.optim.SGD`.
    """

    lr = _Hyperparameter(_rate)
    _kernel = staticmethod(_optim.sgd_update)

    def __init__(self, lr=0.01):
        self.lr = lr

    def _step_scalars(self):
        return (self.lr,)

    def _numpy_update(self, params, key, g, lr):
        params[key] -= lr * g


class Momentum(_Optimizer):
    r"""Momentum SGD: :math:`v \leftarrow \alpha v - \eta g`, then :math:`W \leftarrow W + v`.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta > 0`.
    momentum : float, default 0.9
        :math:`\alpha \in [0, 1)`.

    Attributes
    ----------
    v : dict of ndarray or None
        The velocity of each parameter, created (zeros) at the first update.

    Notes
    -----
    Twin: :class:`fastnn.reference.optim.Momentum`.
    """

    lr = _Hyperparameter(_rate)
    momentum = _Hyperparameter(_fraction)
    _state_names = ("v",)
    _kernel = staticmethod(_optim.momentum_update)

    def __init__(self, lr=0.01, momentum=0.9):
        self.lr = lr
        self.momentum = momentum
        self.v = None

    def _step_scalars(self):
        return self.lr, self.momentum

    def _numpy_update(self, params, key, g, lr, momentum):
        self.v[key] = momentum * self.v[key] - lr * g
        params[key] += self.v[key]


class Nesterov(Momentum):
    r"""Nesterov's accelerated gradient (http://arxiv.org/abs/1212.0901), in the book's form.

    .. math::

        v \leftarrow \alpha v - \eta g, \qquad
        W \leftarrow W + \alpha^2 v - (1 + \alpha)\,\eta g

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta > 0`.
    momentum : float, default 0.9
        :math:`\alpha \in [0, 1)`.

    Attributes
    ----------
    v : dict of ndarray or None
        The velocity of each parameter, created (zeros) at the first update.

    Notes
    -----
    The constructor, state and checks are Momentum's; only the update differs.
    Twin: :class:`fastnn.reference.optim.Nesterov`.
    """

    _kernel = staticmethod(_optim.nesterov_update)

    def _numpy_update(self, params, key, g, lr, momentum):
        self.v[key] *= momentum
        self.v[key] -= lr * g
        params[key] += momentum * momentum * self.v[key]
        params[key] -= (1 + momentum) * lr * g


class AdaGrad(_Optimizer):
    r"""AdaGrad: :math:`h \leftarrow h + g^2`, then
    :math:`W \leftarrow W - \eta\,g / (\sqrt{h} + 10^{-7})`.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta > 0`.

    Attributes
    ----------
    h : dict of ndarray or None
        The sum of the squared gradients of each parameter, created at the first update.

    Notes
    -----
    Twin: :class:`fastnn.reference.optim.AdaGrad`.
    """

    lr = _Hyperparameter(_rate)
    _state_names = ("h",)
    _kernel = staticmethod(_optim.adagrad_update)

    def __init__(self, lr=0.01):
        self.lr = lr
        self.h = None

    def _step_scalars(self):
        return (self.lr,)

    def _numpy_update(self, params, key, g, lr):
        self.h[key] += g * g
        params[key] -= lr * g / (np.sqrt(self.h[key]) + 1e-7)


class RMSprop(_Optimizer):
    r"""RMSprop: :math:`h \leftarrow \rho h + (1 - \rho) g^2`, then
    :math:`W \leftarrow W - \eta\,g / (\sqrt{h} + 10^{-7})`.

    Parameters
    ----------
    lr : float, default 0.01
        The learning rate :math:`\eta > 0`.
    decay_rate : float, default 0.99
        :math:`\rho \in [0, 1)`.

    Attributes
    ----------
    h : dict of ndarray or None
        The moving average of the squared gradients of each parameter, created at the first
        update.

    Notes
    -----
    Twin: :class:`fastnn.reference.optim.RMSprop`.
    """

    lr = _Hyperparameter(_rate)
    decay_rate = _Hyperparameter(_fraction)
    _state_names = ("h",)
    _kernel = staticmethod(_optim.rmsprop_update)

    def __init__(self, lr=0.01, decay_rate=0.99):
        self.lr = lr
        self.decay_rate = decay_rate
        self.h = None

    def _step_scalars(self):
        return self.lr, self.decay_rate

    def _numpy_update(self, params, key, g, lr, decay_rate):
        self.h[key] *= decay_rate
        self.h[key] += (1 - decay_rate) * g * g
        params[key] -= lr * g / (np.sqrt(self.h[key]) + 1e-7)


class Adam(_Optimizer):
    r"""Adam (http://arxiv.org/abs/1412.6980v8), in the book's form.

    At step :math:`t` (``iter``, counted from 1):

    .. math::

        \eta_t = \eta \sqrt{1 - \beta_2^t} / (1 - \beta_1^t), \quad
        m \leftarrow m + (1 - \beta_1)(g - m), \quad
        v \leftarrow v + (1 - \beta_2)(g^2 - v), \quad
        W \leftarrow W - \eta_t\, m / (\sqrt{v} + 10^{-7})

    Parameters
    ----------
    lr : float, default 0.001
        The learning rate :math:`\eta > 0`.
    beta1, beta2 : float, default 0.9 and 0.999
        The decay rates of the moment estimates, in [0, 1).

    Attributes
    ----------
    iter : int
        The number of updates so far.
    m, v : dict of ndarray or None
        The first and second moment estimates of each parameter, created at the first update.

    Notes
    -----
    Twin: :class:`fastnn.reference.optim.Adam`.  Its last line multiplies the float32 moment
    by the NumPy float64 ``lr_t`` and therefore computes that line in float64 under NumPy 2;
    the kernel computes it in the parameter's dtype, as the book did under NumPy 1.
    """

    lr = _Hyperparameter(_rate)
    beta1 = _Hyperparameter(_fraction)
    beta2 = _Hyperparameter(_fraction)
    _state_names = ("m", "v")
    _kernel = staticmethod(_optim.adam_update)

    def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
        self.lr = lr
        self.beta1 = beta1
        self.beta2 = beta2
        self.iter = 0
        self.m = None
        self.v = None

    def _step_scalars(self):
        self.iter += 1
        lr_t = self.lr * math.sqrt(1.0 - self.beta2**self.iter) / (1.0 - self.beta1**self.iter)
        return lr_t, self.beta1, self.beta2

    def _numpy_update(self, params, key, g, lr_t, beta1, beta2):
        self.m[key] += (1 - beta1) * (g - self.m[key])
        self.v[key] += (1 - beta2) * (g**2 - self.v[key])
        # the book's lr_t is a NumPy float64 (np.sqrt), which NumPy 2 does not demote
        params[key] -= np.float64(lr_t) * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


# The names of the book's Trainer (common/trainer.py).  fastnn.reference.optim.OPTIMIZERS has
# the same keys, which pairs every optimizer with its twin in the tests and benchmarks.
OPTIMIZERS = {
    "sgd": SGD, "momentum": Momentum, "nesterov": Nesterov,
    "adagrad": AdaGrad, "rmsprop": RMSprop, "adam": Adam,
}


def get_optimizer(name_or_instance, **params):
    """An optimizer from its name, as the book's Trainer builds one, or the optimizer given.

    Parameters
    ----------
    name_or_instance : str, optimizer class or optimizer
        A name of :data:`OPTIMIZERS` (any case: ``'SGD'``, ``'adam'``, ...), a class to
        instantiate, or an object with an ``update(params, grads)`` method, returned as it is.
    **params
        Hyper-parameters for the constructor (``lr=0.1``, ...); only with a name or a class.

    Returns
    -------
    optimizer

    Raises
    ------
    ValueError
        For an unknown name; the message lists the valid ones.
    TypeError
        For hyper-parameters given with an instance, or an object that is no optimizer.
    """
    if isinstance(name_or_instance, str):
        cls = OPTIMIZERS.get(name_or_instance.lower())
        if cls is None:
            raise ValueError(
                f"unknown optimizer {name_or_instance!r}; valid names (any case): "
                + ", ".join(repr(name) for name in OPTIMIZERS)
            )
        return cls(**params)
    if isinstance(name_or_instance, type):
        return name_or_instance(**params)
    if not callable(getattr(name_or_instance, "update", None)):
        raise TypeError(
            "optimizer must be a name (" + ", ".join(OPTIMIZERS) + ") or an object with an "
            f"update(params, grads) method, got {type(name_or_instance).__name__}"
        )
    if params:
        raise TypeError(
            f"hyper-parameters {sorted(params)} can only be given with an optimizer name or "
            f"class, not with the instance {name_or_instance!r}"
        )
    return name_or_instance
