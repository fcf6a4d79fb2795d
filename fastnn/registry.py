"""The registry of (fastnn, reference) pairs that tests and benchmarks iterate over.

Each :class:`Pair` runs the same computation through either API namespace: ``FAST`` (the
compiled ``fastnn`` modules) or ``REFERENCE`` (their NumPy twins), on inputs made by
``make_inputs(rng, n, k, dtype)`` for a batch of ``n`` rows of ``k`` features.  A compiled
path registered here is parity-tested (tests/test_parity.py) and benchmarked
(benchmarks/bench_pairs.py) without anyone remembering to.
"""
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np

import fastnn.functions
import fastnn.layers
import fastnn.nets
import fastnn.reference.functions
import fastnn.reference.layers
import fastnn.reference.nets
import fastnn.reference.normalization

FAST = SimpleNamespace(name="fastnn", F=fastnn.functions, L=fastnn.layers, N=fastnn.nets)
REFERENCE = SimpleNamespace(
    name="reference", F=fastnn.reference.functions, L=fastnn.reference.layers,
    N=fastnn.reference.nets,
)
# the "normalization" family (Dropout, BatchNormalization): its twins' own module
FAST.NORM = fastnn.layers
REFERENCE.NORM = fastnn.reference.normalization


@dataclass(frozen=True)
class Pair:
    name: str
    run: Callable          # run(api, *inputs) -> array, scalar or tuple of them
    make_inputs: Callable  # make_inputs(rng, n, k, dtype) -> tuple of inputs


def _x(rng, n, k, dtype, scale=3.0):
    return (scale * rng.standard_normal((n, k))).astype(dtype)


def _labels(rng, n, k):
    return rng.integers(0, k, size=n)


def _one_hot(rng, n, k, dtype):
    return np.eye(k, dtype=dtype)[_labels(rng, n, k)]


def _probs(rng, n, k, dtype):
    e = np.exp(rng.standard_normal((n, k)))
    return (e / e.sum(axis=1, keepdims=True)).astype(dtype)


def _layer(cls_name, *init):
    def run(api, x, dout, *extra):
        layer = getattr(api.L, cls_name)(*init, *extra)
        out = layer.forward(x)
        return out, layer.backward(dout)
    return run


def _dense(cls_name):
    def run(api, x, W, b, dout):
        layer = getattr(api.L, cls_name)(W, b)
        out = layer.forward(x)
        dx = layer.backward(dout)
        return out, dx, layer.dW, layer.db
    return run


def _dense_inputs(transposed, hidden=50, extra_dims=()):
    def make(rng, n, k, dtype):
        shape_in = (k, *extra_dims)
        d = int(np.prod(shape_in))
        W = (0.1 * rng.standard_normal((hidden, d) if transposed else (d, hidden))).astype(dtype)
        b = rng.standard_normal(hidden).astype(dtype)
        x = rng.standard_normal((n, *shape_in)).astype(dtype)
        return x, W, b, rng.standard_normal((n, hidden)).astype(dtype)
    return make


def _softmax_with_loss(exact):
    def run(api, x, t):
        layer = api.L.SoftmaxWithLoss(exact=exact)
        loss = layer.forward(x, t)
        return loss, layer.backward(1), layer.backward(0.5)
    return run


def _sigmoid_with_loss(api, x, t):
    layer = api.L.SigmoidWithLoss()
    loss = layer.forward(x, t)
    return loss, layer.backward(1)


def _net_step(make_net):
    def run(api, x, t):
        net = make_net(api, x.shape[1], x.dtype)
        return net.loss(x, t), net.predict(x), tuple(net.gradient(x, t).values())
    return run


def _net_inputs(rng, n, k, dtype):
    return rng.random((n, k)).astype(dtype), _labels(rng, n, 10)


def _sparse_net_inputs(rng, n, k, dtype):
    """Mostly zeros, as MNIST images are: the compiled first layer takes its sparse path."""
    x = rng.random((n, k)).astype(dtype)
    x[rng.random((n, k)) < 0.8] = 0
    return x, _labels(rng, n, 10)


PAIRS = [
    Pair("sigmoid", lambda api, x: api.F.sigmoid(x), lambda r, n, k, dt: (_x(r, n, k, dt, 10),)),
    Pair("sigmoid_grad", lambda api, x: api.F.sigmoid_grad(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("relu", lambda api, x: api.F.relu(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("relu_grad", lambda api, x: api.F.relu_grad(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("softmax", lambda api, x: api.F.softmax(x), lambda r, n, k, dt: (_x(r, n, k, dt, 10),)),
    Pair("sum_squared_error", lambda api, y, t: api.F.sum_squared_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("cross_entropy_error[labels]", lambda api, y, t: api.F.cross_entropy_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _labels(r, n, k))),
    Pair("cross_entropy_error[one-hot]", lambda api, y, t: api.F.cross_entropy_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("cross_entropy_error[exact]", lambda api, y, t: api.F.cross_entropy_error(y, t, exact=True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss[labels]", lambda api, x, t: api.F.softmax_loss(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss[one-hot]", lambda api, x, t: api.F.softmax_loss(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("softmax_loss_grad[labels]", lambda api, x, t: api.F.softmax_loss_grad(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss_grad[one-hot, exact]",
         lambda api, x, t: api.F.softmax_loss_grad(x, t, exact=True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("one_hot", lambda api, t, k: api.F.one_hot(t, k), lambda r, n, k, dt: (_labels(r, n, k), k)),
    Pair("binary_cross_entropy", lambda api, y, t: api.F.binary_cross_entropy(y, t),
         lambda r, n, k, dt: (r.random((n, k)).astype(dt), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("binary_cross_entropy[logits]",
         lambda api, y, t: api.F.binary_cross_entropy(y, t, from_logits=True),
         lambda r, n, k, dt: (_x(r, n, k, dt, 30), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("Relu", _layer("Relu"), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Sigmoid", _layer("Sigmoid"), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Affine", _dense("Affine"), _dense_inputs(False)),
    Pair("Affine[4-D input]", _dense("Affine"), _dense_inputs(False, 7, (2, 3))),
    Pair("Linear", _dense("Linear"), _dense_inputs(True)),
    Pair("SoftmaxWithLoss[labels]", _softmax_with_loss(False),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("SoftmaxWithLoss[one-hot]", _softmax_with_loss(False),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("SoftmaxWithLoss[exact]", _softmax_with_loss(True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("SigmoidWithLoss", _sigmoid_with_loss,
         lambda r, n, k, dt: (_x(r, n, k, dt), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("TwoLayerNet", _net_step(lambda api, d, dt: api.N.TwoLayerNet(d, 16, 10, 0.1, dtype=dt, rng=0)),
         _net_inputs),
    Pair("TwoLayerNet[sparse input]",
         _net_step(lambda api, d, dt: api.N.TwoLayerNet(d, 50, 10, 0.1, dtype=dt, rng=0)),
         _sparse_net_inputs),
    Pair("MultiLayerNet[sigmoid, sparse input]",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [70, 9], 10, "sigmoid", "sigmoid",
                                                          dtype=dt, rng=4, exact_loss=True)),
         _sparse_net_inputs),
    Pair("MultiLayerNet[relu]",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9, 7], 10, dtype=dt, rng=1,
                                                          weight_decay_lambda=0.01)),
         _net_inputs),
    Pair("MultiLayerNet[sigmoid]",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9], 10, "sigmoid", "sigmoid",
                                                          dtype=dt, rng=2)),
         _net_inputs),
    Pair("MultiLayerNet[identity]",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9], 10, "identity", 0.1,
                                                          dtype=dt, rng=3, exact_loss=True)),
         _net_inputs),
]


# --- the normalization family (chapter 6): Dropout, BatchNormalization, MultiLayerNetExtend ---

def _dropout(train, seeded_global):
    def run(api, x, dout):
        if seeded_global:
            np.random.seed(7)  # the book's stream: both sides draw the same masks
            layer = api.NORM.Dropout(0.3)
        else:
            layer = api.NORM.Dropout(0.3, rng=7)
        out = layer.forward(x, train_flg=train)
        if not train:
            return out
        return out, layer.mask, layer.backward(dout)
    return run


def _batchnorm(train, four_d=False):
    def run(api, x, gamma, beta, dout):
        layer = api.NORM.BatchNormalization(gamma, beta, momentum=0.8)
        out = layer.forward(x, train_flg=True)
        dx = layer.backward(dout)
        out2 = layer.forward(x[::-1], train_flg=True)  # a second step of the running stats
        result = (out, dx, layer.dgamma, layer.dbeta, out2, layer.running_mean, layer.running_var)
        return result if train else layer.forward(x, train_flg=False)
    return run


def _batchnorm_inputs(four_d):
    def make(rng, n, k, dtype):
        # at least three rows: at two, dx is the part of dout orthogonal to 1 and xn, about
        # eps / var of its terms, so any two orders of the same operations differ by more
        # than that (tests/test_normalization.py checks two rows against the terms)
        n = max(n, 3)
        shape = (n, 2, k, 2) if four_d else (n, k)
        d = int(np.prod(shape[1:]))
        x = (2.0 * rng.standard_normal(shape) + rng.standard_normal(d).reshape(shape[1:])).astype(dtype)
        gamma = (1 + 0.5 * rng.standard_normal(d)).astype(dtype)
        beta = rng.standard_normal(d).astype(dtype)
        return x, gamma, beta, rng.standard_normal(shape).astype(dtype)
    return make


def _extend_step(batchnorm, dropout, **options):
    def run(api, x, t):
        if dropout and "rng" not in options:
            np.random.seed(11)  # weights and masks from the book's global stream
        net = api.N.MultiLayerNetExtend(x.shape[1], [12, 9, 7], 10, use_batchnorm=batchnorm,
                                        use_dropout=dropout, dtype=x.dtype, **options)
        grads = net.gradient(x, t)
        # with batch normalization the biases of its layers have no effect and a gradient
        # of rounding noise around 0 (tests/test_normalization.py bounds it): left out here
        kept = tuple(g.copy() for key, g in grads.items()
                     if not (batchnorm and key.startswith("b") and key != f"b{len(net.hidden_size_list) + 1}"))
        return (net.loss(x, t), net.loss(x, t, train_flg=True), net.predict(x), kept,
                net.accuracy(x, t))
    return run


def _extend_inputs(rng, n, k, dtype):
    # at least eight rows: through three layers of batch normalization a batch of very few
    # rows amplifies float32 rounding past 1e-5 in the twin as much as in fastnn (both
    # measured against float64); and at least four features: from one, every unit of the
    # first layer normalises to the same column up to its sign, the worst conditioned case;
    # see also _batchnorm_inputs
    n, k = max(n, 8), max(k, 4)
    return rng.random((n, k)).astype(dtype), _labels(rng, n, 10)


PAIRS += [
    Pair("Dropout", _dropout(True, False), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Dropout[global stream]", _dropout(True, True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Dropout[test]", _dropout(False, False), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("BatchNormalization", _batchnorm(True), _batchnorm_inputs(False)),
    Pair("BatchNormalization[test]", _batchnorm(False), _batchnorm_inputs(False)),
    Pair("BatchNormalization[4-D input]", _batchnorm(True), _batchnorm_inputs(True)),
    Pair("MultiLayerNetExtend[batchnorm]",
         _extend_step(True, False, weight_decay_lambda=0.05, rng=3),
         _extend_inputs),
    Pair("MultiLayerNetExtend[batchnorm, dropout]",
         _extend_step(True, True, dropout_ration=0.2), _extend_inputs),
    Pair("MultiLayerNetExtend[dropout, sigmoid]",
         _extend_step(False, True, activation="sigmoid", weight_init_std="sigmoid", rng=5),
         _extend_inputs),
    Pair("MultiLayerNetExtend[batchnorm, dropout, identity]",
         _extend_step(True, True, activation="identity", weight_init_std=0.1, rng=6,
                      exact_loss=True), _extend_inputs),
]
