"""The registry of (fastnn, reference) pairs that tests and benchmarks iterate over.

Each :class:`Pair` runs the same computation through either API namespace: ``FAST`` (the
compiled ``fastnn`` modules) or ``REFERENCE`` (their NumPy twins), on inputs made by
``make_inputs(rng, n, k, dtype)`` for a batch of ``n`` rows of ``k`` features.  A compiled
path registered here is parity-tested (tests/test_parity.py) and benchmarked
(benchmarks/bench_<family>.py) without anyone remembering to.

``family`` names the pair's layer family, which is one name in five places:
``fastnn/_kernels/_<family>.pyx`` (the kernels), the twin ``twin`` in ``fastnn.reference``,
the entries here, ``tests/test_<family>.py`` and ``benchmarks/bench_<family>.py``
(tests/test_layout.py checks that all five exist).
"""
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable, Optional

import numpy as np

import fastnn.functions
import fastnn.layers
import fastnn.nets
import fastnn.reference.conv
import fastnn.reference.functions
import fastnn.reference.layers
import fastnn.reference.nets
import fastnn.reference.normalization
import fastnn.util

# C: the convolution family, whose twins share one module (fastnn.reference.conv)
_FAST_CONV = SimpleNamespace(im2col=fastnn.util.im2col, col2im=fastnn.util.col2im,
                             Convolution=fastnn.layers.Convolution, Pooling=fastnn.layers.Pooling)
# NORM: the normalization family (Dropout, BatchNormalization), twins in their own module
FAST = SimpleNamespace(name="fastnn", F=fastnn.functions, L=fastnn.layers, N=fastnn.nets,
                       C=_FAST_CONV, NORM=fastnn.layers)
REFERENCE = SimpleNamespace(
    name="reference", F=fastnn.reference.functions, L=fastnn.reference.layers,
    N=fastnn.reference.nets, C=fastnn.reference.conv, NORM=fastnn.reference.normalization,
)


@dataclass(frozen=True)
class Pair:
    name: str
    family: str            # the kernel family: fastnn/_kernels/_<family>.pyx
    twin: str              # the twin's dotted name in fastnn.reference
    run: Callable          # run(api, *inputs) -> array, scalar or tuple of them
    make_inputs: Callable  # make_inputs(rng, n, k, dtype) -> tuple of inputs
    # the largest relative difference allowed, where it is not the dtype's (tests/conftest.py
    # TOLERANCE): the bf16 networks', with its reason at BF16_STEP_TOLERANCE
    tolerance: Optional[float] = None


def pairs(family):
    """The registered pairs of one family."""
    return [p for p in PAIRS if p.family == family]


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


def _convnet_step(make_net):
    def run(api, x, t):
        net = make_net(api, x.shape[1], x.dtype)
        np.random.seed(0)  # DeepConvNet's dropout masks: the same for both
        loss = net.loss(x, t)
        np.random.seed(1)
        grads = tuple(np.array(g) for g in net.gradient(x, t).values())
        return loss, net.predict(x), grads
    return run


def _small_convnet(api, channels, dtype, filter_num=4, filter_size=3, pad=1, stride=1,
                   **options):
    np.random.seed(0)
    net = api.N.SimpleConvNet(input_dim=(channels, 8, 8), conv_param={
        'filter_num': filter_num, 'filter_size': filter_size, 'pad': pad, 'stride': stride},
        hidden_size=9,
        output_size=10, weight_init_std=0.3, dtype=dtype, **options)
    return net


def _small_deep_convnet(api, channels, dtype, **options):
    np.random.seed(0)
    # the book's DeepConvNet is built for 28x28 images; a narrower one keeps the test quick
    narrow = [{'filter_num': f, 'filter_size': 3, 'pad': p, 'stride': 1}
              for f, p in ((2, 1), (2, 1), (3, 1), (3, 2), (4, 1), (64, 1))]
    return api.N.DeepConvNet(input_dim=(channels, 28, 28), conv_param_1=narrow[0],
                             conv_param_2=narrow[1], conv_param_3=narrow[2],
                             conv_param_4=narrow[3], conv_param_5=narrow[4],
                             conv_param_6=narrow[5], hidden_size=6, dtype=dtype, **options)


def _image_inputs(size):
    """n images of min(k, 3) channels (the registry's k), and labels."""
    def make(rng, n, k, dtype):
        return rng.random((n, min(k, 3), size, size)).astype(dtype), _labels(rng, n, 10)
    return make


PAIRS = [
    Pair("sigmoid", "activations", "fastnn.reference.functions.sigmoid",
         lambda api, x: api.F.sigmoid(x), lambda r, n, k, dt: (_x(r, n, k, dt, 10),)),
    Pair("sigmoid_grad", "activations", "fastnn.reference.functions.sigmoid_grad",
         lambda api, x: api.F.sigmoid_grad(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("relu", "activations", "fastnn.reference.functions.relu",
         lambda api, x: api.F.relu(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("relu_grad", "activations", "fastnn.reference.functions.relu_grad",
         lambda api, x: api.F.relu_grad(x), lambda r, n, k, dt: (_x(r, n, k, dt),)),
    Pair("softmax", "loss", "fastnn.reference.functions.softmax",
         lambda api, x: api.F.softmax(x), lambda r, n, k, dt: (_x(r, n, k, dt, 10),)),
    Pair("sum_squared_error", "loss", "fastnn.reference.functions.sum_squared_error",
         lambda api, y, t: api.F.sum_squared_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("cross_entropy_error[labels]", "loss", "fastnn.reference.functions.cross_entropy_error",
         lambda api, y, t: api.F.cross_entropy_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _labels(r, n, k))),
    Pair("cross_entropy_error[one-hot]", "loss", "fastnn.reference.functions.cross_entropy_error",
         lambda api, y, t: api.F.cross_entropy_error(y, t),
         lambda r, n, k, dt: (_probs(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("cross_entropy_error[exact]", "loss", "fastnn.reference.functions.cross_entropy_error",
         lambda api, y, t: api.F.cross_entropy_error(y, t, exact=True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss[labels]", "loss", "fastnn.reference.functions.softmax_loss",
         lambda api, x, t: api.F.softmax_loss(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss[one-hot]", "loss", "fastnn.reference.functions.softmax_loss",
         lambda api, x, t: api.F.softmax_loss(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("softmax_loss_grad[labels]", "loss", "fastnn.reference.functions.softmax_loss_grad",
         lambda api, x, t: api.F.softmax_loss_grad(x, t),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("softmax_loss_grad[one-hot, exact]", "loss", "fastnn.reference.functions.softmax_loss_grad",
         lambda api, x, t: api.F.softmax_loss_grad(x, t, exact=True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("one_hot", "loss", "fastnn.reference.functions.one_hot",
         lambda api, t, k: api.F.one_hot(t, k), lambda r, n, k, dt: (_labels(r, n, k), k)),
    Pair("binary_cross_entropy", "loss", "fastnn.reference.functions.binary_cross_entropy",
         lambda api, y, t: api.F.binary_cross_entropy(y, t),
         lambda r, n, k, dt: (r.random((n, k)).astype(dt), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("binary_cross_entropy[logits]", "loss", "fastnn.reference.functions.binary_cross_entropy",
         lambda api, y, t: api.F.binary_cross_entropy(y, t, from_logits=True),
         lambda r, n, k, dt: (_x(r, n, k, dt, 30), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("Relu", "activations", "fastnn.reference.layers.Relu",
         _layer("Relu"), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Sigmoid", "activations", "fastnn.reference.layers.Sigmoid",
         _layer("Sigmoid"), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Affine", "dense", "fastnn.reference.layers.Affine",
         _dense("Affine"), _dense_inputs(False)),
    Pair("Affine[4-D input]", "dense", "fastnn.reference.layers.Affine",
         _dense("Affine"), _dense_inputs(False, 7, (2, 3))),
    Pair("Linear", "dense", "fastnn.reference.layers.Linear",
         _dense("Linear"), _dense_inputs(True)),
    Pair("SoftmaxWithLoss[labels]", "loss", "fastnn.reference.layers.SoftmaxWithLoss",
         _softmax_with_loss(False),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("SoftmaxWithLoss[one-hot]", "loss", "fastnn.reference.layers.SoftmaxWithLoss",
         _softmax_with_loss(False),
         lambda r, n, k, dt: (_x(r, n, k, dt), _one_hot(r, n, k, dt))),
    Pair("SoftmaxWithLoss[exact]", "loss", "fastnn.reference.layers.SoftmaxWithLoss",
         _softmax_with_loss(True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _labels(r, n, k))),
    Pair("SigmoidWithLoss", "loss", "fastnn.reference.layers.SigmoidWithLoss", _sigmoid_with_loss,
         lambda r, n, k, dt: (_x(r, n, k, dt), r.integers(0, 2, (n, k)).astype(dt))),
    Pair("TwoLayerNet", "network", "fastnn.reference.nets.TwoLayerNet",
         _net_step(lambda api, d, dt: api.N.TwoLayerNet(d, 16, 10, 0.1, dtype=dt, rng=0)),
         _net_inputs),
    Pair("TwoLayerNet[sparse input]", "network", "fastnn.reference.nets.TwoLayerNet",
         _net_step(lambda api, d, dt: api.N.TwoLayerNet(d, 50, 10, 0.1, dtype=dt, rng=0)),
         _sparse_net_inputs),
    Pair("MultiLayerNet[sigmoid, sparse input]", "network", "fastnn.reference.nets.MultiLayerNet",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [70, 9], 10, "sigmoid", "sigmoid",
                                                          dtype=dt, rng=4, exact_loss=True)),
         _sparse_net_inputs),
    Pair("MultiLayerNet[relu]", "network", "fastnn.reference.nets.MultiLayerNet",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9, 7], 10, dtype=dt, rng=1,
                                                          weight_decay_lambda=0.01)),
         _net_inputs),
    Pair("MultiLayerNet[sigmoid]", "network", "fastnn.reference.nets.MultiLayerNet",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9], 10, "sigmoid", "sigmoid",
                                                          dtype=dt, rng=2)),
         _net_inputs),
    Pair("MultiLayerNet[identity]", "network", "fastnn.reference.nets.MultiLayerNet",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9], 10, "identity", 0.1,
                                                          dtype=dt, rng=3, exact_loss=True)),
         _net_inputs),
    Pair("SimpleConvNet", "convnet", "fastnn.reference.convnets.SimpleConvNet",
         _convnet_step(_small_convnet), _image_inputs(8)),
    Pair("DeepConvNet[narrow]", "convnet", "fastnn.reference.convnets.DeepConvNet",
         _convnet_step(_small_deep_convnet), _image_inputs(28)),
]


# --- bfloat16 mixed precision (precision="bf16", fastnn/_kernels/_bf16.pyx) ---------------------
# A bf16 network computes in float32 whatever the inputs' dtype, so its pairs run float32 on
# both sides in every dtype of the tests.  Where both sides round the same operands (the input
# and the weights: every operand of a one-layer forward pass), they differ by float32's order
# of summation only (tests/test_bf16.py holds those to 1e-5).  Through a whole step they may
# not: a hidden activation or delta is a float32 value that the two sides compute in different
# orders, a few float32 ulps apart, and where it lies that close to a midpoint between two
# bfloat16 values the two sides round it to neighbours: that operand element differs by one
# bfloat16 ulp (2**-8 relative, 2**-7 at most), and with it the outputs by that part of its
# terms (at most about 2**-8 of an output in a batch of one; measured: 6e-4 through two batch
# normalization layers, 1e-7 without them).  2**-6 leaves room for a few such elements.
BF16_STEP_TOLERANCE = 2.0**-6


PAIRS += [
    Pair("round_bf16", "bf16", "fastnn.reference.functions.round_bf16",
         lambda api, x: api.F.round_bf16(x), lambda r, n, k, dt: _round_inputs(r, n, k)),
    Pair("TwoLayerNet[bf16]", "network", "fastnn.reference.nets.TwoLayerNet",
         _net_step(lambda api, d, dt: api.N.TwoLayerNet(d, 16, 10, 0.1, dtype=np.float32,
                                                        rng=0, precision="bf16")),
         _net_inputs, BF16_STEP_TOLERANCE),
    Pair("MultiLayerNet[bf16, sigmoid, weight decay]", "network",
         "fastnn.reference.nets.MultiLayerNet",
         _net_step(lambda api, d, dt: api.N.MultiLayerNet(d, [12, 9], 10, "sigmoid", "sigmoid",
                                                          weight_decay_lambda=0.01,
                                                          dtype=np.float32, rng=2,
                                                          precision="bf16")),
         _net_inputs, BF16_STEP_TOLERANCE),
]


# the convnets in bf16 on both paths (fastnn/_kernels/_convnet.pyx): direct (stride 1: 4
# filters, rounded up inside, and 16), im2col + GEMM (stride 2; the narrow DeepConvNet's 2 and
# 3 filters before its last convolution)
PAIRS += [
    Pair("SimpleConvNet[bf16]", "convnet", "fastnn.reference.convnets.SimpleConvNet",
         _convnet_step(lambda api, c, dt: _small_convnet(api, c, np.float32, precision="bf16")),
         _image_inputs(8), BF16_STEP_TOLERANCE),
    Pair("SimpleConvNet[16 filters, bf16]", "convnet", "fastnn.reference.convnets.SimpleConvNet",
         _convnet_step(lambda api, c, dt: _small_convnet(api, c, np.float32, 16,
                                                         precision="bf16")),
         _image_inputs(8), BF16_STEP_TOLERANCE),
    Pair("SimpleConvNet[stride 2: im2col, bf16]", "convnet",
         "fastnn.reference.convnets.SimpleConvNet",
         _convnet_step(lambda api, c, dt: _small_convnet(api, c, np.float32, 4, 2, 0, 2,
                                                         precision="bf16")),
         _image_inputs(8), BF16_STEP_TOLERANCE),
    Pair("DeepConvNet[narrow, bf16]", "convnet", "fastnn.reference.convnets.DeepConvNet",
         _convnet_step(lambda api, c, dt: _small_deep_convnet(api, c, np.float32,
                                                              precision="bf16")),
         _image_inputs(28), BF16_STEP_TOLERANCE),
]


def _round_inputs(rng, n, k):
    x = (rng.standard_normal((n, k)) * 2.0 ** rng.integers(-30, 30, (n, k))).astype(np.float32)
    # exact ties (the dropped 16 bits 0x8000) on about a third of the elements
    bits = x.view(np.uint32)
    tie = rng.random((n, k)) < 0.3
    bits[tie] = (bits[tie] & np.uint32(0xFFFF0000)) | np.uint32(0x8000)
    return (x,)


# --- the normalization family (chapter 6): Dropout, BatchNormalization, MultiLayerNetExtend ---
# (MultiLayerNetExtend's whole-network step is _network_extend.pyx, over this family's kernels)

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
        # a bf16 network is float32 (and computes in float32 whatever x's dtype)
        dtype = np.float32 if options.get("precision") else x.dtype
        net = api.N.MultiLayerNetExtend(x.shape[1], [12, 9, 7], 10, use_batchnorm=batchnorm,
                                        use_dropout=dropout, dtype=dtype, **options)
        grads = net.gradient(x, t)
        # with batch normalization the biases of its layers have no effect and a gradient
        # of rounding noise around 0 (tests/test_normalization.py bounds it): left out here
        kept = tuple(g.copy() for key, g in grads.items()
                     if not (batchnorm and key.startswith("b") and key != f"b{len(net.hidden_size_list) + 1}"))
        return (net.loss(x, t), net.loss(x, t, train_flg=True), net.predict(x), kept,
                net.accuracy(x, t))
    return run


_DROPOUT_TWIN = "fastnn.reference.normalization.Dropout"
_BN_TWIN = "fastnn.reference.normalization.BatchNormalization"


def _extend_inputs(rng, n, k, dtype):
    # at least eight rows: through three layers of batch normalization a batch of very few
    # rows amplifies float32 rounding past 1e-5 in the twin as much as in fastnn (both
    # measured against float64); and at least four features: from one, every unit of the
    # first layer normalises to the same column up to its sign, the worst conditioned case;
    # see also _batchnorm_inputs
    n, k = max(n, 8), max(k, 4)
    return rng.random((n, k)).astype(dtype), _labels(rng, n, 10)


def _sparse_extend_inputs(rng, n, k, dtype):
    """_extend_inputs mostly zeros, as MNIST images are: the first layer's sparse path."""
    x, t = _extend_inputs(rng, n, k, dtype)
    x[rng.random(x.shape) < 0.8] = 0
    return x, t


PAIRS += [
    Pair("Dropout", "normalization", _DROPOUT_TWIN,
         _dropout(True, False), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Dropout[global stream]", "normalization", _DROPOUT_TWIN,
         _dropout(True, True),
         lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("Dropout[test]", "normalization", _DROPOUT_TWIN,
         _dropout(False, False), lambda r, n, k, dt: (_x(r, n, k, dt), _x(r, n, k, dt))),
    Pair("BatchNormalization", "normalization", _BN_TWIN,
         _batchnorm(True), _batchnorm_inputs(False)),
    Pair("BatchNormalization[test]", "normalization", _BN_TWIN,
         _batchnorm(False), _batchnorm_inputs(False)),
    Pair("BatchNormalization[4-D input]", "normalization", _BN_TWIN,
         _batchnorm(True), _batchnorm_inputs(True)),
    Pair("MultiLayerNetExtend[batchnorm]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(True, False, weight_decay_lambda=0.05, rng=3),
         _extend_inputs),
    Pair("MultiLayerNetExtend[batchnorm, dropout]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(True, True, dropout_ration=0.2), _extend_inputs),
    Pair("MultiLayerNetExtend[dropout, sigmoid]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(False, True, activation="sigmoid", weight_init_std="sigmoid", rng=5),
         _extend_inputs),
    Pair("MultiLayerNetExtend[batchnorm, dropout, identity]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(True, True, activation="identity", weight_init_std=0.1, rng=6,
                      exact_loss=True), _extend_inputs),
    Pair("MultiLayerNetExtend[bf16, batchnorm, dropout]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(True, True, dropout_ration=0.2, rng=8, precision="bf16"),
         _extend_inputs, BF16_STEP_TOLERANCE),
    Pair("MultiLayerNetExtend[batchnorm, dropout, sparse input]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(True, True, dropout_ration=0.2, weight_decay_lambda=0.05, rng=9),
         _sparse_extend_inputs),
    Pair("MultiLayerNetExtend[bf16, dropout, sparse input]", "normalization",
         "fastnn.reference.nets.MultiLayerNetExtend",
         _extend_step(False, True, dropout_ration=0.2, rng=10, precision="bf16"),
         _sparse_extend_inputs, BF16_STEP_TOLERANCE),
]


# --- convolution and pooling: images of (n, 1 + k % 3, ...) with windows drawn from k ---------

def _image_geometry(n, k, window=(3, 3), stride=1, pad=0):
    c, h, w = 1 + k % 3, 4 + k % 7, 3 + k % 5
    fh, fw = min(window[0], h + 2 * pad), min(window[1], w + 2 * pad)
    return (n, c, h, w), (fh, fw), ((h + 2 * pad - fh) // stride + 1,
                                    (w + 2 * pad - fw) // stride + 1)


def _im2col_inputs(window, stride, pad):
    def make(rng, n, k, dtype):
        shape, (fh, fw), _ = _image_geometry(n, k, window, stride, pad)
        return rng.standard_normal(shape).astype(dtype), fh, fw, stride, pad
    return make


def _col2im_inputs(window, stride, pad):
    def make(rng, n, k, dtype):
        shape, (fh, fw), (oh, ow) = _image_geometry(n, k, window, stride, pad)
        col = rng.standard_normal((n * oh * ow, shape[1] * fh * fw)).astype(dtype)
        return col, shape, fh, fw, stride, pad
    return make


def _convolution(api, x, W, b, dout, stride, pad):
    layer = api.C.Convolution(W, b, stride, pad)
    out = layer.forward(x)
    dx = layer.backward(dout)
    return out, dx, layer.dW, layer.db


def _convolution_inputs(window, stride, pad, filters=4):
    def make(rng, n, k, dtype):
        shape, (fh, fw), (oh, ow) = _image_geometry(n, k, window, stride, pad)
        x = rng.standard_normal(shape).astype(dtype)
        W = (0.3 * rng.standard_normal((filters, shape[1], fh, fw))).astype(dtype)
        b = rng.standard_normal(filters).astype(dtype)
        dout = rng.standard_normal((n, filters, oh, ow)).astype(dtype)
        return x, W, b, dout, stride, pad
    return make


def _pooling(api, x, dout, ph, pw, stride, pad):
    layer = api.C.Pooling(ph, pw, stride, pad)
    out = layer.forward(x)
    return out, layer.backward(dout), layer.arg_max.astype(float)


def _pooling_inputs(window, stride, pad):
    def make(rng, n, k, dtype):
        shape, (ph, pw), (oh, ow) = _image_geometry(n, k, window, stride, pad)
        x = rng.standard_normal(shape).astype(dtype)
        dout = rng.standard_normal((n, shape[1], oh, ow)).astype(dtype)
        return x, dout, ph, pw, stride, pad
    return make


_TWIN = "fastnn.reference.conv."
PAIRS += [
    Pair("im2col", "conv", _TWIN + "im2col", lambda api, *a: api.C.im2col(*a),
         _im2col_inputs((3, 3), 1, 0)),
    Pair("im2col[3x2, stride 2, pad 1]", "conv", _TWIN + "im2col",
         lambda api, *a: api.C.im2col(*a), _im2col_inputs((3, 2), 2, 1)),
    Pair("col2im", "conv", _TWIN + "col2im", lambda api, *a: api.C.col2im(*a),
         _col2im_inputs((3, 3), 1, 0)),
    Pair("col2im[2x3, stride 2, pad 2]", "conv", _TWIN + "col2im",
         lambda api, *a: api.C.col2im(*a), _col2im_inputs((2, 3), 2, 2)),
    Pair("Convolution", "conv", _TWIN + "Convolution", _convolution,
         _convolution_inputs((3, 3), 1, 0)),
    Pair("Convolution[3x3, pad 1]", "conv", _TWIN + "Convolution", _convolution,
         _convolution_inputs((3, 3), 1, 1, 7)),
    Pair("Convolution[2x3, stride 2, pad 2]", "conv", _TWIN + "Convolution", _convolution,
         _convolution_inputs((2, 3), 2, 2)),
    Pair("Pooling", "conv", _TWIN + "Pooling", _pooling, _pooling_inputs((2, 2), 2, 0)),
    Pair("Pooling[3x3, stride 1, pad 1]", "conv", _TWIN + "Pooling", _pooling,
         _pooling_inputs((3, 3), 1, 1)),
]
