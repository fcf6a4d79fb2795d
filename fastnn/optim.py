"""The book's ``common/optimizer.py``: optimizers that update a network's parameters in place.

Replace ``from common.optimizer import ...`` by ``from fastnn.optim import ...``.  Each class
takes the book's constructor arguments, keeps the book's state attributes (``v``, ``h``, ``m``,
``iter``: dicts of arrays of each parameter's shape and dtype, created at the first update) and
applies the book's formulas, 1e-7 epsilons included.  Its twin of the same name is in
:mod:`fastnn.reference.optim`.

``update(params, grads)`` writes into the very arrays of ``params``, as the book's ``-=`` does,
so the layers holding them see the new values.  Each parameter takes one compiled pass (no GIL)
over the parameter, its gradient and its state; after the first update no array is allocated
unless a gradient has to be converted to its parameter's dtype or layout.
"""
import math
from collections.abc import Mapping

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


def _checked_grad(p, g, key):
    """``grads[key]`` as an array a kernel can take with ``params[key]``, or an error.

    The slow path of :func:`_checked_pairs`: explains a bad parameter, converts a gradient of
    another dtype or layout (one copy), refuses one of another shape.
    """
    v.check_in_place(p, f"params[{key!r}]")
    name = f"grads[{key!r}]"
    g = v.as_float(g, name, p.dtype)
    v.check_shape(g, p.shape, name)
    if np.may_share_memory(g, p):
        # the book reads such a grad through temporaries; the kernels' one pass must not
        g = g.copy()
    return g


def _checked_pairs(params, grads):
    """``[(key, param, grad)]`` in the order of ``params``, every pair kernel-ready.

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
        if not ready(p, g):
            g = _checked_grad(p, g, key)
        pairs.append((key, p, g))
    return pairs


class _Optimizer:
    """The update loop shared by every optimizer: check, create the state, one kernel per key.

    A subclass names its per-parameter state dicts in ``_state_names`` (attributes that are
    ``None`` until the first update, as in the book), its kernel of
    :mod:`fastnn._kernels._optim` in ``_kernel``, and returns the kernel's scalar arguments
    for this step from ``_step_scalars()``.
    """

    _state_names = ()
    _kernel = None

    def update(self, params, grads):
        """Update every array of ``params`` in place from the gradient of the same key.

        Parameters
        ----------
        params : dict of ndarray
            The network's parameters: writable, C-contiguous float32 or float64 arrays.
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
                setattr(self, state, {key: np.zeros(p.shape, p.dtype) for key, p, _ in pairs})
        calls = [(p, g, *self._state_of(key, p)) for key, p, g in pairs]
        scalars = self._step_scalars()
        kernel = self._kernel
        for arrays in calls:
            kernel(*arrays, *scalars)

    def _state_of(self, key, p):
        """The state arrays of ``params[key]``, checked against ``p``."""
        arrays = []
        for state in self._state_names:
            s = getattr(self, state).get(key)
            if not _optim.kernel_ready(p, s, True):
                made_for = ("no state" if s is None
                            else f"a state of shape {np.shape(s)} and dtype {np.asarray(s).dtype}")
                raise ValueError(
                    f"params[{key!r}] has shape {p.shape} and dtype {p.dtype}, but the optimizer "
                    f"has {made_for} for it in {state}[{key!r}]; the state is created at the "
                    "first update, so use a new optimizer for other parameters"
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
